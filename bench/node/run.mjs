// Baseline for `make bench-engine`: Orion's engine (dataflow-rs 2.0.15, as WASM) under node.
//
// Usage: node run.mjs --workloads ../workloads/workloads.json [--messages N] [--warmup N] [--only NAME]
//                     [--mode raw|response]
// Prints one JSON document on stdout: {engine, version, node, mode, results: [{name, msgs_per_s, ...}]}.
//
// Per message (mode "raw", the default): the request body string goes into `engine.process` (the WASM
// API takes the payload as a raw string and never parses it; the benchmark workflows do not read the
// payload, as in Orion's fixtures) and the engine's own output JSON string (the whole message, serialized
// by serde inside the WASM) is the result. This is the cheapest JSON-in/JSON-out path the package
// offers, i.e. the most favourable baseline. Mode "response" also reshapes it in JS into Orion's sync
// response `{id, status, data, errors}` (JSON.parse + JSON.stringify), which costs V8 roughly a third.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { initSync, WasmEngine } from '@goplasmatic/dataflow-wasm';

const require = createRequire(import.meta.url);
const PKG = '@goplasmatic/dataflow-wasm';
const pkgVersion = JSON.parse(readFileSync(require.resolve(`${PKG}/package.json`), 'utf8')).version;
initSync({ module: readFileSync(require.resolve(`${PKG}/dataflow_wasm_bg.wasm`)) });

function parseArgs(argv) {
  const args = { messages: 30000, warmup: 30000, only: null, mode: 'raw', workloads: null };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    const value = argv[i + 1];
    if (!(key in args) || value === undefined) throw new Error(`bad argument: ${argv[i]}`);
    args[key] = ['messages', 'warmup'].includes(key) ? Number.parseInt(value, 10) : value;
  }
  if (!args.workloads) throw new Error('--workloads <path to workloads.json> is required');
  if (!['response', 'raw'].includes(args.mode)) throw new Error(`bad --mode: ${args.mode}`);
  if (!(args.messages > 0) || !(args.warmup >= 0)) throw new Error('--messages must be > 0, --warmup >= 0');
  return args;
}

// Orion's admin shape (`workflow_id`) -> the engine shape (`id`), as Orion's workflow_to_dataflow does.
function toEngineShape(doc) {
  const { workflow_id: workflowId, ...rest } = doc;
  return { id: workflowId ?? doc.id, ...rest };
}

function loadWorkflows(base, file) {
  const parsed = JSON.parse(readFileSync(resolve(base, file), 'utf8'));
  return (Array.isArray(parsed) ? parsed : [parsed]).map(toEngineShape);
}

function toResponse(messageJson) {
  const msg = JSON.parse(messageJson);
  return JSON.stringify({ id: msg.id, status: 'ok', data: msg.context.data, errors: msg.errors });
}

async function runWorkload(base, workload, args) {
  const file = workload.baseline_workflows ?? workload.workflows;
  const workflows = loadWorkflows(base, file);
  const engine = new WasmEngine(JSON.stringify(workflows));
  if (engine.workflow_count() !== workflows.length) {
    // dataflow-rs silently drops workflows it cannot build; a dropped one would make the numbers lie.
    throw new Error(`${workload.name}: engine kept ${engine.workflow_count()} of ${workflows.length} workflows`);
  }
  const body = readFileSync(resolve(base, workload.payload), 'utf8');

  // One checked run: the work done must be the work the Quasar side is asserted to do.
  const sample = JSON.parse(await engine.process(body));
  const executed = sample.audit_trail.map((a) => `${a.workflow_id}/${a.task_id}`);

  const once = args.mode === 'raw' ? async () => engine.process(body) : async () => toResponse(await engine.process(body));
  for (let i = 0; i < args.warmup; i++) await once();
  let bytesOut = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < args.messages; i++) bytesOut += (await once()).length;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  engine.free();
  return {
    name: workload.name,
    workflows: file,
    messages: args.messages,
    seconds,
    msgs_per_s: args.messages / seconds,
    avg_bytes_out: bytesOut / args.messages,
    data: sample.context.data,
    errors: sample.errors,
    executed,
    note: workload.baseline_workflows ? workload.baseline_note ?? 'substitute workflow' : null,
  };
}

const args = parseArgs(process.argv.slice(2));
const manifestPath = resolve(args.workloads);
const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
const results = [];
for (const workload of manifest.workloads) {
  if (args.only && workload.name !== args.only) continue;
  results.push(await runWorkload(dirname(manifestPath), workload, args));
}
process.stdout.write(
  `${JSON.stringify({ engine: PKG, version: pkgVersion, node: process.version, mode: args.mode, results })}\n`,
);
