// {{name}}: a Warden tool. `warden tool build .` builds it (see README.md).
import { current } from 'warden:tool/context@0.1.0';
import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';

// The input's JSON Schema: Warden checks every input against it before `invoke` runs.
const INPUT_SCHEMA = {
  type: 'object',
  required: ['name'],
  additionalProperties: false,
  properties: {
    name: { type: 'string', minLength: 1 },
    // A file to read under the mount /data (uncomment [[fs]] in tool.toml).
    file: { type: 'string' },
    // A URL to GET (uncomment [[egress]] in tool.toml for its host).
    url: { type: 'string' },
  },
};

export function describe() {
  return {
    name: '{{name}}',
    description: 'Greets someone by name.',
    inputSchema: JSON.stringify(INPUT_SCHEMA),
  };
}

// `invoke` may be async: the host waits for the promise.
export async function invoke(input) {
  const args = JSON.parse(input);
  if (!args.name.trim()) {
    // What the caller did wrong: `{ tag: 'invalid-input', val }`; what went wrong here:
    // `{ tag: 'failed', val }`.
    throw { tag: 'invalid-input', val: 'name is blank' };
  }
  const output = { greeting: `Hello, ${args.name}!`, call: current().callId };
  if (args.file !== undefined) {
    output.file = new TextDecoder().decode(readFile('/data', args.file));
  }
  if (args.url !== undefined) {
    // `fetch` goes through the host, which decides it by the `[[egress]]` rules in tool.toml
    // and adds any credential; a request no rule allows fails.
    try {
      const response = await fetch(args.url);
      output.status = response.status;
      output.body = await response.text();
    } catch (e) {
      throw { tag: 'failed', val: `GET ${args.url}: ${e}` };
    }
  }
  return JSON.stringify(output);
}

// Reads `path` under the mount `guest` through `wasi:filesystem` (JavaScript has no `fs`).
function readFile(guest, path) {
  const mount = getDirectories().find(([, name]) => name === guest);
  if (!mount) throw { tag: 'failed', val: `no mount at ${guest}` };
  try {
    const file = mount[0].openAt({}, path, {}, { read: true });
    const stream = file.readViaStream(0n);
    const chunks = [];
    for (;;) {
      try {
        chunks.push(stream.blockingRead(65536n));
      } catch (e) {
        if (e.payload?.tag === 'closed') break;
        throw e;
      }
    }
    const bytes = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    chunks.reduce((at, c) => (bytes.set(c, at), at + c.length), 0);
    return bytes;
  } catch (e) {
    if (e.tag === 'failed') throw e;
    throw { tag: 'failed', val: `reading ${guest}/${path}: ${e.payload ?? e}` };
  }
}
