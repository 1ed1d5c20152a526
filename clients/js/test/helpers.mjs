// Shared test machinery: free ports, a real `wsgate demo` process, event
// recorders and polling waits. No mocks of wsgate: tests that need the real
// thing start the binary named by WSGATE_BIN.

import { spawn } from 'node:child_process';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export { sleep };

/** WSGATE_BIN, or undefined; suites that need it skip with a message when unset. */
export const wsgateBin = process.env.WSGATE_BIN || undefined;
export const needsWsgate = wsgateBin ? false : 'WSGATE_BIN is not set (scripts/test-js.sh sets it)';

/** freePort asks the kernel for a port that was free a moment ago. */
export async function freePort() {
  const srv = net.createServer();
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const { port } = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

/** waitUntil polls fn until it returns a truthy value, which it resolves to. */
export async function waitUntil(fn, { timeout = 10_000, interval = 20, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(interval);
  }
}

/** nextEvent resolves with the first argument of conn's next `name` event, or rejects after timeout ms. */
export function nextEvent(conn, name, { timeout = 10_000 } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${timeout} ms waiting for event ${name}`));
    }, timeout);
    const off = conn.once(name, (value) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

/**
 * record keeps every event a connection emits, in order, as
 * {name, args, at}. states() lists the state events; messages() the JSON
 * payloads of message events.
 */
export function record(conn) {
  const events = [];
  for (const name of ['state', 'message', 'drop', 'refetch', 'recovery', 'error']) {
    conn.on(name, (...args) => events.push({ name, args, at: Date.now() }));
  }
  return {
    events,
    states: () => events.filter((e) => e.name === 'state').map((e) => e.args[0]),
    stateNames: () => events.filter((e) => e.name === 'state').map((e) => e.args[0].state),
    messages: () => events.filter((e) => e.name === 'message').map((e) => e.args[1].json ?? e.args[0]),
    named: (name) => events.filter((e) => e.name === name).map((e) => e.args),
  };
}

/** A running `wsgate demo` process on 127.0.0.1. */
export class Wsgate {
  constructor({ port, adminPort, proc, logs, exited }) {
    this.port = port;
    this.adminPort = adminPort;
    this.proc = proc;
    this.logs = logs;
    this.exited = exited; // resolves to {code, signal}
    this.http = `http://127.0.0.1:${port}`;
    this.ws = `ws://127.0.0.1:${port}`;
  }

  /** token mints a dev token from /demo/token. */
  async token({ user = 'alice', tenant = 'demo', session = 'demo', ttl = 300 } = {}) {
    const q = new URLSearchParams({ user, tenant, session, ttl: String(ttl) });
    const res = await fetch(`${this.http}/demo/token?${q}`);
    if (res.status !== 200) throw new Error(`/demo/token: HTTP ${res.status}: ${await res.text()}`);
    const body = await res.json();
    if (typeof body.token !== 'string' || typeof body.expires_at !== 'number') {
      throw new Error(`/demo/token: unexpected body ${JSON.stringify(body)}`);
    }
    return body.token;
  }

  /** ask makes the demo AI service publish a token stream to ai:stream:{session}. */
  async ask(session, prompt) {
    const res = await fetch(`${this.http}/demo/ask?session=${encodeURIComponent(session)}`, {
      method: 'POST',
      body: prompt,
    });
    await res.arrayBuffer();
    return res.status;
  }

  /**
   * stop sends signal and waits for the exit. A process still running after
   * timeout ms is killed, and the result says so (killed: true).
   */
  async stop(signal = 'SIGTERM', timeout = 10_000) {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
    let timer;
    const late = new Promise((resolve) => {
      timer = setTimeout(() => resolve(null), timeout);
    });
    const result = await Promise.race([this.exited, late]);
    clearTimeout(timer);
    if (result) return { ...result, killed: false };
    this.proc.kill('SIGKILL');
    return { ...(await this.exited), killed: true };
  }
}

// Processes this test file started; none may outlive it, even when a test
// fails before its cleanup runs.
const running = new Set();
process.once('exit', () => {
  for (const proc of running) proc.kill('SIGKILL');
});

/**
 * startWsgate runs `wsgate demo` on the given (or free) ports and resolves
 * once /readyz answers 200. env WSGATE_SHUTDOWN_GRACE defaults to 1s.
 */
export async function startWsgate({ port, adminPort, env = {} } = {}) {
  if (!wsgateBin) throw new Error('WSGATE_BIN is not set');
  port ??= await freePort();
  adminPort ??= await freePort();
  const proc = spawn(
    wsgateBin,
    ['demo', '--listen', `127.0.0.1:${port}`, '--admin-listen', `127.0.0.1:${adminPort}`],
    {
      env: { ...process.env, WSGATE_SHUTDOWN_GRACE: '1s', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  running.add(proc);
  proc.once('exit', () => running.delete(proc));
  const logs = [];
  const keep = (chunk) => {
    logs.push(chunk.toString());
    if (logs.length > 500) logs.shift();
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  const gate = new Wsgate({ port, adminPort, proc, logs, exited });
  try {
    await waitUntil(
      async () => {
        if (proc.exitCode !== null) throw new Error(`wsgate exited with ${proc.exitCode}:\n${logs.join('')}`);
        try {
          const res = await fetch(`http://127.0.0.1:${adminPort}/readyz`);
          await res.arrayBuffer();
          return res.status === 200;
        } catch {
          return false;
        }
      },
      { timeout: 15_000, interval: 50, what: 'wsgate /readyz' },
    );
  } catch (err) {
    proc.kill('SIGKILL');
    throw err;
  }
  return gate;
}

/**
 * startRelay runs a TCP relay on 127.0.0.1 in front of targetPort, standing
 * in for the network between a client and wsgate. cut() resets every
 * relayed connection on both sides at once, as a dropped link would (no
 * close frame: the client sees 1006); while down(true),
 * new connections are destroyed as soon as they arrive.
 */
export async function startRelay(targetPort) {
  const pairs = new Set();
  let isDown = false;
  let accepted = 0;
  const server = net.createServer((client) => {
    accepted++;
    if (isDown) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair = { client, upstream };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: server.address().port,
    get accepted() {
      return accepted;
    },
    get open() {
      return pairs.size;
    },
    /** cut destroys every relayed connection and returns how many there were. */
    cut() {
      const n = pairs.size;
      // An RST on both sides: what a client sees when a NAT entry or a
      // proxy vanishes, with nothing of the WebSocket closing handshake.
      for (const { client, upstream } of [...pairs]) {
        client.resetAndDestroy();
        upstream.resetAndDestroy();
      }
      pairs.clear();
      return n;
    },
    down(value = true) {
      isDown = value;
    },
    close() {
      this.cut();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
