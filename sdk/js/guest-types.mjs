// TypeScript declarations (.d.ts) of a JavaScript extension's world, for its author's editor
// and type checker: `node guest-types.mjs TOOLS WIT OUT` (build.sh runs it after the build).
//
// It is `jco guest-types` (jco-transpile's generateGuestTypes) with one difference: the WASI
// file-system shim jco-transpile runs its WIT reader on (preview2-shim 0.26) starts with no
// preopened folder, so `jco guest-types` cannot read any WIT folder ("failed to read path for
// WIT ... os error 44"). Here the shim instance jco-transpile imports is given `/` first.
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [tools, wit, out] = process.argv.slice(2);
if (!tools || !wit || !out) {
  console.error('usage: node guest-types.mjs TOOLS_DIR WIT_DIR OUT_DIR');
  process.exit(2);
}
const transpile = join(resolve(tools), 'node_modules', '@bytecodealliance', 'jco-transpile');
// Resolved from jco-transpile's own folder, as Node resolves its imports: the same module.
const fromTranspile = createRequire(join(transpile, 'dist', 'index.js'));
const shim = fromTranspile.resolve('@bytecodealliance/preview2-shim/filesystem');
const { _setPreopens } = await import(pathToFileURL(shim).href);
_setPreopens({ '/': '/' });
const { generateGuestTypes } = await import(pathToFileURL(join(transpile, 'dist', 'index.js')).href);
const outDir = resolve(out);
const files = await generateGuestTypes(resolve(wit), { outDir: `${outDir}/` });
await rm(outDir, { recursive: true, force: true });
for (const [name, bytes] of Object.entries(files)) {
  if (!resolve(name).startsWith(`${outDir}/`)) {
    throw new Error(`jco-transpile named a file outside ${outDir}: ${name}`);
  }
  await mkdir(dirname(name), { recursive: true });
  await writeFile(name, bytes);
}
