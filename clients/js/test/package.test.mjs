// The package as a frontend gets it: `npm pack`, then a fresh project in a
// temporary directory installs the tarball, imports both entry points as
// ES modules in Node, and type-checks a consumer file with tsc (strict,
// NodeNext resolution, so the exports map and its "types" are what count).

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';

const run = promisify(execFile);
const pkgDir = fileURLToPath(new URL('..', import.meta.url));
const pkg = JSON.parse(await readFile(join(pkgDir, 'package.json'), 'utf8'));
const tsc = join(pkgDir, 'node_modules', '.bin', 'tsc');

// The consumer: every export used as documented, and misuse marked with
// @ts-expect-error, so tsc fails if the types loosen to any or go missing.
const consumer = `
import { useState } from 'react';
import { connect, closeAction, closeActions, Connection, SUBPROTOCOL_PREFIX } from '@wsgate/client';
import type { ConnectOptions, StateEvent, CloseAction } from '@wsgate/client';
import { useWsgate } from '@wsgate/client/react';
import type { UseWsgateResult, WsgateMessage } from '@wsgate/client/react';

const options: ConnectOptions = { url: '/ws/chat', token: async () => 'jwt', resume: true, backoff: { initial: 250 } };
const conn: Connection = connect(options);
conn.on('state', (ev: StateEvent) => console.log(ev.state, ev.code));
conn.on('type:token', (data) => console.log(data));
const sent: boolean = conn.sendJSON('prompt', { text: 'hi' });
const action: CloseAction = closeAction(4001);
const table: Readonly<Record<number, CloseAction>> = closeActions;
const prefix: string = SUBPROTOCOL_PREFIX;
// @ts-expect-error url is required
connect({ token: 'jwt' });
// @ts-expect-error carrier is 'query' or 'subprotocol'
connect({ url: '/x', token: 'jwt', carrier: 'cookie' });

export function Answer({ session }: { session: string | null }) {
  const [prompt] = useState('revenue by region');
  const stream: UseWsgateResult = useWsgate(session && '/ws/ai/stream/' + session, {
    token: () => fetch('/api/ws-token').then((r) => r.text()),
    resume: true,
    keep: 500,
    on: { refetch: (ev) => console.log(ev.source), 'type:complete': (data) => console.log(data) },
  });
  const tokens = stream.messages.filter((m: WsgateMessage) => (m.json as any)?.type === 'token');
  // @ts-expect-error State has no 'broken'
  const broken = stream.state === 'broken';
  // @ts-expect-error keep is a number
  useWsgate('/ws/chat', { token: 'jwt', keep: 'all' });
  stream.sendJSON('prompt', { text: prompt });
  return tokens.length + (stream.closeEvent?.code ?? 0) + (broken ? 1 : 0) + (sent ? 1 : 0) + action.length + Object.keys(table).length + prefix.length;
}
`;

describe('npm package', { timeout: 180_000 }, () => {
  let dir;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wsgate-pkg-'));
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('npm pack ships exactly the module, the hook, their types and the README', async () => {
    const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: pkgDir });
    const [info] = JSON.parse(stdout);
    assert.equal(info.name, '@wsgate/client');
    assert.deepEqual(info.files.map((f) => f.path).sort(), [
      'README.md',
      'package.json',
      'src/index.d.ts',
      'src/index.js',
      'src/react.d.ts',
      'src/react.js',
    ]);
  });

  test('a fresh project installs the tarball, imports it as ESM, and type-checks against it', async () => {
    const tarball = join(dir, `wsgate-client-${pkg.version}.tgz`);
    const app = join(dir, 'app');
    await run('mkdir', ['-p', app]);
    await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
    const dev = pkg.devDependencies;
    // --prefer-offline: npm ci already put these exact versions in npm's cache.
    await run(
      'npm',
      ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball,
        `react@${dev.react}`, `react-dom@${dev['react-dom']}`, `@types/react@${dev['@types/react']}`],
      { cwd: app, timeout: 120_000 },
    );
    const installed = JSON.parse(await readFile(join(app, 'node_modules/@wsgate/client/package.json'), 'utf8'));
    assert.equal(installed.version, pkg.version);

    const probe = `
      import * as client from '@wsgate/client';
      import * as hook from '@wsgate/client/react';
      console.log(JSON.stringify({
        client: Object.keys(client).sort(),
        hook: Object.keys(hook),
        refresh: client.closeAction(4001),
        stop: client.closeAction(4003),
      }));`;
    const { stdout } = await run('node', ['--input-type=module', '-e', probe], { cwd: app });
    assert.deepEqual(JSON.parse(stdout), {
      client: ['Connection', 'SUBPROTOCOL_PREFIX', 'closeAction', 'closeActions', 'connect'],
      hook: ['useWsgate'],
      refresh: 'refresh',
      stop: 'stop',
    });

    await writeFile(join(app, 'consumer.tsx'), consumer);
    await writeFile(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          noEmit: true,
          target: 'es2022',
          module: 'nodenext',
          moduleResolution: 'nodenext',
          jsx: 'react-jsx',
          lib: ['es2022', 'dom'],
          skipLibCheck: false,
          types: [],
        },
        files: ['consumer.tsx'],
      }),
    );
    try {
      await run(tsc, ['-p', app], { cwd: app });
    } catch (err) {
      assert.fail(`tsc found errors:\n${err.stdout}${err.stderr}`);
    }
  });
});
