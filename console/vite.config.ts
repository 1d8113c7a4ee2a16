/// <reference types="vitest" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The gateway serves the build at /console from its package (edrs_gateway/console_dist), so a
// wheel or an editable install carries it; `make console` builds it, nothing built is committed.
export default defineConfig({
  base: "/console/",
  plugins: [react()],
  build: {
    outDir: "../services/gateway/src/edrs_gateway/console_dist",
    emptyOutDir: true,
    // Names under assets/ carry a content hash: the gateway caches them for a year.
    assetsDir: "assets",
    // No inline <script> or data: module: the page runs under `script-src 'self'`.
    assetsInlineLimit: 0,
    sourcemap: false,
  },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.ts", "src/**/*.test.tsx"],
  },
});
