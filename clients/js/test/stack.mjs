// A production-shaped stack on loopback for the browser tests that need
// more than `wsgate demo`: a real redis-server, the example FastAPI service
// (clients/python/examples/ai_service.py under uvicorn on Debian's python3)
// and `wsgate serve` with a config file. Every process is killed when the
// test file's process exits, even after a failure.

import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';

import { freePort, waitUntil, wsgateBin } from './helpers.mjs';

const run = promisify(execFile);
const repo = fileURLToPath(new URL('../../..', import.meta.url));
export const python = process.env.PYTHON_BIN || '/usr/bin/python3';

const running = new Set();
process.once('exit', () => {
  for (const proc of running) proc.kill('SIGKILL');
});

function start(cmd, args, opts = {}) {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  running.add(proc);
  const logs = [];
  const keep = (chunk) => {
    logs.push(chunk.toString());
    if (logs.length > 300) logs.shift();
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  proc.once('exit', () => running.delete(proc));
  return {
    proc,
    logs,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
    alive() {
      if (proc.exitCode !== null) throw new Error(`${cmd} exited with ${proc.exitCode}:\n${logs.join('')}`);
    },
  };
}

async function httpOK(url) {
  try {
    const res = await fetch(url);
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}

/** startStack: redis-server, the example AI service and wsgate serve, wired together. */
export async function startStack({ allowedOrigins = [], tokenDelay = '0.03' } = {}) {
  if (!wsgateBin) throw new Error('WSGATE_BIN is not set');
  const dir = await mkdtemp(join(tmpdir(), 'wsgate-stack-'));
  const secret = randomBytes(24).toString('hex');
  const parts = [];
  const stop = async () => {
    for (const p of parts.reverse()) await p.stop();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const redisPort = await freePort();
    const redis = start('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '',
      '--appendonly', 'no', '--dir', dir, '--loglevel', 'warning']);
    parts.push(redis);
    const redisURL = `redis://127.0.0.1:${redisPort}/0`;
    await waitUntil(async () => {
      redis.alive();
      try {
        return (await run('redis-cli', ['-p', String(redisPort), 'ping'])).stdout.trim() === 'PONG';
      } catch {
        return false;
      }
    }, { what: 'redis-server' });

    const servicePort = await freePort();
    const service = start(python, ['-s', '-m', 'uvicorn', '--app-dir', join(repo, 'clients/python/examples'),
      'ai_service:app', '--host', '127.0.0.1', '--port', String(servicePort), '--log-level', 'warning'], {
      env: { ...process.env, PYTHONPATH: join(repo, 'clients/python'), PYTHONDONTWRITEBYTECODE: '1',
        WSGATE_REDIS_URL: redisURL, WSGATE_HISTORY_SIZE: '1000', AI_TOKEN_DELAY: tokenDelay },
    });
    parts.push(service);
    await waitUntil(async () => {
      service.alive();
      return httpOK(`http://127.0.0.1:${servicePort}/healthz`);
    }, { timeout: 20_000, what: 'ai_service /healthz' });

    const port = await freePort();
    const adminPort = await freePort();
    const config = {
      listen: `127.0.0.1:${port}`,
      admin_listen: `127.0.0.1:${adminPort}`,
      shutdown_grace: '1s',
      allowed_origins: allowedOrigins,
      auth: { hmac_secret: secret },
      redis: { url: redisURL },
      limits: { handshakes_per_second_per_ip: -1 },
      routes: [
        { path: '/ws/ai/stream/{session}', subscribe: ['ai:stream:{session}'], require: { session: 'sid' },
          history: { size: 1000, ttl: '10m' } },
        { path: '/ws/chat', upstream: `ws://127.0.0.1:${servicePort}/ws/chat` },
      ],
    };
    const configPath = join(dir, 'wsgate.yaml');
    await writeFile(configPath, JSON.stringify(config, null, 2)); // JSON is YAML
    const gate = start(wsgateBin, ['serve', '--config', configPath]);
    parts.push(gate);
    await waitUntil(async () => {
      gate.alive();
      return httpOK(`http://127.0.0.1:${adminPort}/readyz`);
    }, { timeout: 15_000, what: 'wsgate /readyz' });

    return {
      port,
      adminPort,
      redisPort,
      servicePort,
      /** mint runs `wsgate token` with the stack's secret. */
      async mint({ sub = 'alice', tenant = 'acme', sid, ttl = '5m' } = {}) {
        const args = ['token', '--secret', secret, '--sub', sub, '--tenant', tenant, '--ttl', ttl];
        if (sid) args.push('--claim', `sid=${sid}`);
        return (await run(wsgateBin, args)).stdout.trim();
      },
      /** redis runs redis-cli against the stack's Redis and returns its output. */
      async redis(...args) {
        return (await run('redis-cli', ['-p', String(redisPort), ...args])).stdout.trim();
      },
      logs: () => parts.map((p) => p.logs.join('')).join('\n'),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
