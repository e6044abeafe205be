import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

// The build goes into the Python package: the API serves index.html at / and at every
// studio path (/experiments/…, /runs/…), and the hashed assets under /studio/assets/.
const outDir = fileURLToPath(new URL("../ingest/api/studio_dist", import.meta.url));
const api = process.env.RUNSTREAM_API ?? "http://127.0.0.1:8470";

export default defineConfig(({ command }) => ({
  base: command === "build" ? "/studio/" : "/",
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    outDir,
    emptyOutDir: true,
    assetsDir: "assets",
    target: "es2020",
    sourcemap: false,
    reportCompressedSize: true,
    chunkSizeWarningLimit: 300,
  },
  server: {
    // `npm run dev`: the studio on http://localhost:5173/, the API behind it (same origin,
    // so cookies and EventSource behave as in production).
    proxy: {
      "/v1": { target: api, changeOrigin: false },
      "/studio/login": { target: api, changeOrigin: false },
      "/studio/logout": { target: api, changeOrigin: false },
    },
  },
}));
