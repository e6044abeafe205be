// The file list of a zip (its central directory), for the snapshot's file tree; nothing
// is decompressed. Zip64 sizes are read when present.

export interface ZipEntry {
  name: string;
  size: number;
  compressed: number;
}

export function zipEntries(buffer: ArrayBuffer): ZipEntry[] {
  const view = new DataView(buffer);
  const n = buffer.byteLength;
  // End of central directory: signature 0x06054b50, within the last 64 KiB + 22 bytes.
  let eocd = -1;
  for (let i = n - 22; i >= Math.max(0, n - 22 - 65535); i--) {
    if (view.getUint32(i, true) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error("not a zip file (no end of central directory)");
  let count = view.getUint16(eocd + 10, true);
  let offset = view.getUint32(eocd + 16, true);
  if (offset === 0xffffffff || count === 0xffff) {
    // Zip64 end of central directory locator, just before the EOCD.
    const locator = eocd - 20;
    if (locator >= 0 && view.getUint32(locator, true) === 0x07064b50) {
      const z64 = Number(view.getBigUint64(locator + 8, true));
      if (view.getUint32(z64, true) === 0x06064b50) {
        count = Number(view.getBigUint64(z64 + 32, true));
        offset = Number(view.getBigUint64(z64 + 48, true));
      }
    }
  }
  const decoder = new TextDecoder();
  const entries: ZipEntry[] = [];
  let p = offset;
  for (let i = 0; i < count; i++) {
    if (p + 46 > n || view.getUint32(p, true) !== 0x02014b50) throw new Error("corrupt zip central directory");
    let compressed = view.getUint32(p + 20, true);
    let size = view.getUint32(p + 24, true);
    const nameLen = view.getUint16(p + 28, true);
    const extraLen = view.getUint16(p + 30, true);
    const commentLen = view.getUint16(p + 32, true);
    const name = decoder.decode(new Uint8Array(buffer, p + 46, nameLen));
    // Zip64 extra field (0x0001): the sizes that did not fit.
    let e = p + 46 + nameLen;
    const end = e + extraLen;
    while (e + 4 <= end) {
      const id = view.getUint16(e, true);
      const len = view.getUint16(e + 2, true);
      if (id === 0x0001) {
        let q = e + 4;
        if (size === 0xffffffff) { size = Number(view.getBigUint64(q, true)); q += 8; }
        if (compressed === 0xffffffff) { compressed = Number(view.getBigUint64(q, true)); }
      }
      e += 4 + len;
    }
    if (!name.endsWith("/")) entries.push({ name, size, compressed });
    p = end + commentLen;
  }
  return entries.sort((a, b) => a.name.localeCompare(b.name));
}

export interface TreeNode {
  name: string;
  path: string;
  size: number;
  children?: TreeNode[];
}

/** Entries as a folder tree (folders first, then files, by name; sizes summed). */
export function fileTree(entries: { name: string; size: number }[]): TreeNode[] {
  const root: TreeNode = { name: "", path: "", size: 0, children: [] };
  for (const entry of entries) {
    const parts = entry.name.split("/").filter(Boolean);
    let node = root;
    node.size += entry.size;
    parts.forEach((part, i) => {
      const last = i === parts.length - 1;
      let child = node.children!.find((c) => c.name === part && !!c.children === !last);
      if (!child) {
        child = { name: part, path: parts.slice(0, i + 1).join("/"), size: 0, children: last ? undefined : [] };
        node.children!.push(child);
      }
      child.size += entry.size;
      node = child;
    });
  }
  const sort = (nodes: TreeNode[]) => {
    nodes.sort((a, b) => Number(!a.children) - Number(!b.children) || a.name.localeCompare(b.name));
    nodes.forEach((n) => n.children && sort(n.children));
  };
  sort(root.children!);
  return root.children!;
}
