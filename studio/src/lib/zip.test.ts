import { describe, expect, it } from "vitest";
import { fileTree, zipEntries } from "./zip";

/** A stored (uncompressed) zip of the given files, written by hand. */
function makeZip(files: Record<string, string>): ArrayBuffer {
  const enc = new TextEncoder();
  const locals: Uint8Array[] = [];
  const centrals: Uint8Array[] = [];
  let offset = 0;
  for (const [name, text] of Object.entries(files)) {
    const n = enc.encode(name);
    const data = enc.encode(text);
    const local = new Uint8Array(30 + n.length + data.length);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint32(18, data.length, true);
    lv.setUint32(22, data.length, true);
    lv.setUint16(26, n.length, true);
    local.set(n, 30);
    local.set(data, 30 + n.length);
    const central = new Uint8Array(46 + n.length);
    const cv = new DataView(central.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint32(20, data.length, true);
    cv.setUint32(24, data.length, true);
    cv.setUint16(28, n.length, true);
    cv.setUint32(42, offset, true);
    central.set(n, 46);
    locals.push(local);
    centrals.push(central);
    offset += local.length;
  }
  const cdSize = centrals.reduce((s, c) => s + c.length, 0);
  const eocd = new Uint8Array(22);
  const ev = new DataView(eocd.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, centrals.length, true);
  ev.setUint16(10, centrals.length, true);
  ev.setUint32(12, cdSize, true);
  ev.setUint32(16, offset, true);
  const out = new Uint8Array(offset + cdSize + 22);
  let p = 0;
  for (const part of [...locals, ...centrals, eocd]) {
    out.set(part, p);
    p += part.length;
  }
  return out.buffer;
}

describe("zipEntries", () => {
  it("lists the files of a zip and builds their tree", () => {
    const entries = zipEntries(makeZip({ "train.py": "print(1)\n", "lib/util.py": "x = 1\n", "lib/": "" }));
    expect(entries.map((e) => [e.name, e.size])).toEqual([["lib/util.py", 6], ["train.py", 9]]);
    const tree = fileTree(entries);
    expect(tree.map((n) => n.name)).toEqual(["lib", "train.py"]);
    expect(tree[0].children![0].path).toBe("lib/util.py");
    expect(tree[0].size).toBe(6);
  });
  it("refuses what is not a zip", () => {
    expect(() => zipEntries(new TextEncoder().encode("not a zip at all, really not").buffer)).toThrow(/not a zip/);
  });
});
