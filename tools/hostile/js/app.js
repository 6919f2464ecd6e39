// Hostile, in JavaScript: tries to leave its sandbox the ways a JavaScript author would, and
// reports what happened to each attempt. Built by tests/authoring.rs with `warden tool build`
// (componentize-js) in a directory `warden new --lang js` made.
import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';
import { getEnvironment } from 'wasi:cli/environment@0.2.12';

export function describe() {
  return {
    name: 'hostile-js',
    description: 'Tries to read outside its mount, the environment and the network.',
    inputSchema: JSON.stringify({
      type: 'object',
      required: ['port'],
      properties: { port: { type: 'integer' } },
    }),
  };
}

async function attempt(action) {
  try {
    return { escaped: true, got: String(await action()).slice(0, 200) };
  } catch (e) {
    return { escaped: false, error: String(e.payload?.tag ?? e).slice(0, 200) };
  }
}

function mount() {
  return getDirectories().find(([, name]) => name === '/data')[0];
}

function read(dir, path) {
  const stream = dir.openAt({}, path, {}, { read: true }).readViaStream(0n);
  return new TextDecoder().decode(stream.blockingRead(4096n));
}

export async function invoke(input) {
  const { port } = JSON.parse(input);
  return JSON.stringify({
    host_file: await attempt(() => read(mount(), '/etc/passwd')),
    dot_dot: await attempt(() => read(mount(), '../../../../etc/passwd')),
    write_read_only: await attempt(() =>
      mount().openAt({}, 'planted.txt', { create: true }, { write: true })),
    preopens: getDirectories().map(([, name]) => name),
    unlisted_host: await attempt(async () => (await fetch(`http://127.0.0.1:${port}/`)).status),
    metadata_host: await attempt(async () =>
      (await fetch('http://169.254.169.254/latest/meta-data/')).status),
    environment: getEnvironment(),
  });
}
