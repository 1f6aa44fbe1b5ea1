// Builds extractor.js into a component of the world `keel:plugin/agent@0.1.0`.
//
//   node build.mjs [OUT]     (default: extractor-js.component.wasm)
//
// Uses componentize-js's Node API: its CLI (and `jco componentize`) is not
// needed. The engine's `http` and `fetch-event` features are left out: keel
// offers agents no `wasi:http`, and a component that imports it would not
// link. The `stdio`, `random` and `clocks` features stay (keel serves them).
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, 'extractor-js.component.wasm'));

const { component } = await componentize({
  sourcePath: join(here, 'extractor.js'),
  witPath: join(here, '../../wit'),
  worldName: 'agent',
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
console.log(`wrote ${out} (${(component.length / 1e6).toFixed(1)} MB)`);
