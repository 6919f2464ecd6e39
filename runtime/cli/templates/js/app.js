// {{name}}: a Warden tool. `warden tool build .` builds it (see README.md).
import { current } from 'warden:tool/context@0.1.0';

// The input's JSON Schema: Warden checks every input against it before `invoke` runs.
const INPUT_SCHEMA = {
  type: 'object',
  required: ['name'],
  additionalProperties: false,
  properties: { name: { type: 'string', minLength: 1 } },
};

export function describe() {
  return {
    name: '{{name}}',
    description: 'Greets someone by name.',
    inputSchema: JSON.stringify(INPUT_SCHEMA),
  };
}

export function invoke(input) {
  const args = JSON.parse(input);
  if (!args.name.trim()) {
    // What the caller did wrong: `{ tag: 'invalid-input', val }`; what went wrong here:
    // `{ tag: 'failed', val }`.
    throw { tag: 'invalid-input', val: 'name is blank' };
  }
  // Files and HTTP need `wasi:filesystem` and `wasi:http` in the world this tool targets
  // (wit/world.wit); the Rust template shows both, JavaScript's are not vendored yet.
  return JSON.stringify({ greeting: `Hello, ${args.name}!`, call: current().callId });
}
