// Copies the admin page's browser libraries from node_modules (pinned by package-lock.json)
// into the page's folder, so the page loads nothing from a CDN and works offline. Run by
// `npm ci` (the `postinstall` script of package.json); the copies are not committed.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const vendor = join(root, "layers/common/deepmem/dashboard/static/vendor");

// The page's name for each file → where npm puts it. Keep in step with deepmem/dashboard/site.py.
const FILES = {
  "htm-preact.umd.js": "htm/preact/standalone.umd.js",
  "supabase.js": "@supabase/supabase-js/dist/umd/supabase.js",
};

mkdirSync(vendor, { recursive: true });
for (const [name, source] of Object.entries(FILES)) {
  copyFileSync(join(root, "node_modules", source), join(vendor, name));
}
console.log(`dashboard: vendored ${Object.keys(FILES).join(", ")} into ${vendor}`);
