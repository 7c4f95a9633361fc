// Shared fixtures for the browser tests: a real `mooyaho dev --allow-anonymous` process and a
// headless Debian Chromium with fake camera/microphone, both torn down by the test.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { MooyahoServer } from '../dist/server.js';

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, '../../..');
export const artifactsDir = join(repoRoot, 'test-artifacts');

/** Starts the binary on a free loopback port; resolves once it printed its URL and API key. */
export async function startServer(extraArgs = [], { anonymous = true, netns, host, listen: listenAt } = {}) {
  const binary = process.env.MOOYAHO_BIN ?? join(repoRoot, 'target/debug/mooyaho');
  const dataDir = mkdtempSync(join(tmpdir(), 'mooyaho-js-test-'));
  // In a network namespace (`netns`, made by the test): listen on all of its addresses and
  // reach it at `host`. `ip netns exec` execs the binary, so the PID stays the server's.
  // `listen: '0.0.0.0:0'` outside one does the same on this host.
  const listen = listenAt ?? (netns ? '0.0.0.0:0' : '127.0.0.1:0');
  const args = ['dev', '--listen', listen, '--data-dir', dataDir, ...(anonymous ? ['--allow-anonymous'] : []), ...extraArgs];
  const [command, argv] = netns ? ['ip', ['netns', 'exec', netns, binary, ...args]] : [binary, args];
  const child = spawn(command, argv, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
  });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  let out = '';
  const { url, apiKey } = await new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${out}\n${stderr}`)), 20_000);
    child.on('exit', (code) => reject(new Error(`server exited with ${code}:\n${out}\n${stderr}`)));
    child.stdout.on('data', (d) => {
      out += d;
      const printed = /mooyaho listening on (http:\/\/\S+)/.exec(out)?.[1];
      const url = printed && host ? printed.replace('0.0.0.0', host) : printed;
      const apiKey = /API key:\s+(\S+)/.exec(out)?.[1];
      if (url && apiKey) {
        clearTimeout(timer);
        resolvePromise({ url, apiKey });
      }
    });
  });
  return {
    url,
    apiKey,
    pid: child.pid,
    api: new MooyahoServer({ baseUrl: url, apiKey }),
    /** The server's log so far (stderr; `RUST_LOG` selects the level, default warn). */
    logs: () => stderr,
    /** The embedded SFU node's UDP ports, from what `dev` printed. */
    mediaPorts: () => [...(/media \[([^\]]*)\]/.exec(out)?.[1] ?? '').matchAll(/:(\d+)/g)].map((m) => Number(m[1])),
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        process.kill(child.pid, 'SIGTERM');
        await Promise.race([exited, sleep(3000)]);
        if (child.exitCode === null) process.kill(child.pid, 'SIGKILL');
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Spawns the binary with `args`; resolves with the child once `ready(stdoutSoFar)` returns a value. */
function spawnUntil(args, ready, what) {
  const binary = process.env.MOOYAHO_BIN ?? join(repoRoot, 'target/debug/mooyaho');
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' } });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start:\n${out}\n${err}`)), 20_000);
    child.on('exit', (code) => reject(new Error(`${what} exited with ${code}:\n${out}\n${err}`)));
    child.stdout.on('data', (d) => {
      out += d;
      const value = ready(out);
      if (value) {
        clearTimeout(timer);
        resolvePromise({ child, value });
      }
    });
  });
}

async function stopChild(child, signal = 'SIGTERM') {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  process.kill(child.pid, signal);
  await Promise.race([exited, sleep(3000)]);
  if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL');
}

/**
 * A fleet of real processes: one `mooyaho server --allow-anonymous` and `nodes` `mooyaho sfu`
 * registered with it (one worker each). `kill(i)` sends SIGKILL to node i and resolves when it
 * is gone. Waits until every node reports healthy. `serverArgs`/`nodeArgs` are appended to
 * the server's and every node's command line (e.g. `--span-nodes`, `--max-transports 2`).
 */
export async function startFleet(nodes = 2, { serverArgs = [], nodeArgs = [] } = {}) {
  const apiKey = 'fleet-test-api-key-0123456789';
  const secret = 'fleet-test-cluster-secret-0123456789';
  const dataDir = mkdtempSync(join(tmpdir(), 'mooyaho-js-fleet-'));
  const server = await spawnUntil(
    ['server', '--listen', '127.0.0.1:0', '--api-key', apiKey, '--cluster-secret', secret, '--allow-anonymous', '--data-dir', dataDir, ...serverArgs],
    (out) => /mooyaho listening on (http:\/\/\S+)/.exec(out)?.[1],
    'mooyaho server',
  );
  const url = server.value;
  const api = new MooyahoServer({ baseUrl: url, apiKey });
  const sfus = [];
  const healthy = (ids) => waitFor(async () => {
    const list = await api.listSfuServers();
    return ids.every((id) => list.find((n) => n.id === id)?.health === 'healthy');
  }, 'every SFU node healthy', 20_000);
  const spawnNode = async () => {
    const node = await spawnUntil(
      ['sfu', '--cluster-secret', secret, '--workers', '1', '--control-listen', '127.0.0.1:0', '--register-url', url, '--api-key', apiKey, ...nodeArgs],
      (out) => /registered:\s+id (\d+)/.exec(out)?.[1],
      'mooyaho sfu',
    );
    sfus.push(node);
    return Number(node.value);
  };
  const ids = [];
  for (let i = 0; i < nodes; i += 1) ids.push(await spawnNode());
  await healthy(ids);
  return {
    url,
    apiKey,
    api,
    /** Registry ids of the nodes, in start order (`kill(i)` takes an index into it). */
    nodeIds: ids,
    async kill(i) {
      await stopChild(sfus[i].child, 'SIGKILL');
    },
    /** Starts one more node; resolves with its id once it is healthy. */
    async addNode() {
      const id = await spawnNode();
      ids.push(id);
      await healthy([id]);
      return id;
    },
    async stop() {
      for (const n of sfus) await stopChild(n.child, 'SIGKILL');
      await stopChild(server.child);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Headless Chromium with a fake camera and microphone (environment-notes §6), plus `extraArgs`. */
export async function launchBrowser(extraArgs = [], { netns } = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'mooyaho-chromium-'));
  let executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
  if (netns) {
    // Inside a network namespace (made by the test): `ip netns exec` execs Chromium with the
    // pipes Playwright drives it through.
    const wrapper = join(profile, 'chromium-in-netns');
    writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${netns} ${executablePath} "$@"\n`, { mode: 0o755 });
    executablePath = wrapper;
  }
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection',
      '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run',
      // Background tabs must keep decoding: every page of a test is "visible" at once.
      '--disable-background-timer-throttling', '--disable-renderer-backgrounding', '--disable-backgrounding-occluded-windows',
      ...extraArgs,
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** A page that has loaded the SDK from the server (the test page), with its console forwarded on failure. */
export async function sdkPage(browser, server, { beforeLoad } = {}) {
  const page = await browser.context.newPage();
  if (beforeLoad) await beforeLoad(page);
  page.on('pageerror', (e) => console.error('[page error]', e.message));
  await page.goto(`${server.url}/demo/test.html`);
  await page.waitForFunction(() => window.sdkReady === true);
  return page;
}

/**
 * Runs in a page (any browser): connects a `Mooyaho` as `window.mooyaho`, with camera, records
 * its events in `window.events`, integrates as `name` when given. Resolves the session id.
 */
export async function connectInPage({ url, allowDirectCall, name, heartbeatMs, iceTransportPolicy }) {
  const mooyaho = new window.Mooyaho({ url, allowDirectCall, ...(heartbeatMs ? { heartbeatMs } : {}), ...(iceTransportPolicy ? { iceTransportPolicy } : {}) });
  window.mooyaho = mooyaho;
  window.events = [];
  for (const type of ['connected', 'enterSuccess', 'entered', 'left', 'remoteStreamChanged', 'peerConnected', 'sfuPeerConnected',
    'reconnected', 'updatedMediaState', 'messaged', 'channelClosed', 'integrated', 'callRejected', 'peerDisconnected']) {
    mooyaho.addEventListener(type, (p) => window.events.push({ type, sessionId: p.sessionId ?? null, reason: p.reason, message: p.message }));
  }
  mooyaho.addEventListener('error', (e) => window.events.push({ type: 'error', code: e.code, message: e.message }));
  const id = await mooyaho.connect();
  await mooyaho.createUserMedia({ audio: true, video: { width: 320, height: 240 } });
  if (name) await mooyaho.integrateUser({ id, name });
  return id;
}

/** Connects a `Mooyaho` in `page` as `window.mooyaho`, with camera, and records its events in `window.events`. */
export async function connectClient(page, server, { allowDirectCall = false, name, heartbeatMs, iceTransportPolicy } = {}) {
  return page.evaluate(connectInPage, { url: server.url, allowDirectCall, name, heartbeatMs, iceTransportPolicy });
}

/**
 * A demo page joined to `channelId` as `name` through its join form (the demo's own camera
 * path); `beforeLoad(page)` runs before it loads (init scripts). Resolves `{page, id, name}`.
 */
export async function joinDemo(browser, server, channelId, name, { beforeLoad } = {}) {
  const page = await browser.context.newPage();
  page.on('pageerror', (e) => console.error(`[${name}]`, e.message));
  if (beforeLoad) await beforeLoad(page);
  await page.goto(`${server.url}/?channel=${channelId}`);
  await page.fill('#name', name);
  await page.click('#join-form button[type=submit]');
  await page.waitForSelector('#room:not([hidden])');
  const id = await page.evaluate(() => window.mooyaho.sessionId);
  return { page, id, name };
}

/**
 * An SDK page connected as `name` and entered in the SFU channel `channelId`, recording its
 * recovery events (`sfuRestart`, `reconnecting`, `reconnected`, with `at`) in `window.recovery`.
 */
export async function joinSfuRecordingRecovery(browser, server, channelId, name) {
  const page = await sdkPage(browser, server);
  const id = await connectClient(page, server, { name });
  await page.evaluate(() => {
    window.recovery = [];
    for (const type of ['sfuRestart', 'reconnecting', 'reconnected']) {
      window.mooyaho.addEventListener(type, (p) => window.recovery.push({ type, ...p, at: Date.now() }));
    }
  });
  await page.evaluate((c) => window.mooyaho.enter(c), channelId);
  return { page, id, name };
}

/** framesDecoded of inbound video per remote session, from each peer PeerConnection's getStats(). */
export function frames(page) {
  return page.evaluate(async () => {
    const out = {};
    for (const [id, pc] of window.mooyaho.peers) {
      let n = 0;
      (await pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded ?? 0; });
      out[id] = n;
    }
    return out;
  });
}

/** framesDecoded per publishing session over the SFU subscribe PeerConnection (one track each). */
export function sfuFrames(page) {
  return page.evaluate(async () => {
    const pc = window.mooyaho.sfuPeers.subscriber;
    const out = {};
    if (!pc) return out;
    for (const [id, stream] of window.mooyaho.remoteStreams) {
      const track = stream.getVideoTracks()[0];
      if (!track) continue;
      let n = 0;
      // A renegotiation can take the track's receiver away between two polls (getStats then
      // throws): that stream counts as nothing decoded this round.
      const stats = await pc.getStats(track).catch(() => null);
      stats?.forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded ?? 0; });
      out[id] = n;
    }
    return out;
  });
}

/**
 * The remote end (`{address, protocol}`) of every connected SFU PeerConnection's selected
 * candidate pair.
 */
export function sfuSelectedRemotes(page) {
  return page.evaluate(async () => {
    const out = [];
    for (const pc of Object.values(window.mooyaho.sfuPeers).filter(Boolean)) {
      const stats = await pc.getStats();
      stats.forEach((r) => {
        if (r.type !== 'transport' || !r.selectedCandidatePairId) return;
        const remote = stats.get(stats.get(r.selectedCandidatePairId)?.remoteCandidateId);
        out.push({ address: remote?.address, protocol: remote?.protocol });
      });
    }
    return out;
  });
}

/**
 * Waits until `page` decodes video from every session in `from`, then checks that the count
 * keeps growing (a frozen or black-holed track would stall). Returns the last counts.
 */
export async function assertDecodingFrom(page, from, label = '', read = frames) {
  const deadline = Date.now() + 20_000;
  let first;
  for (;;) {
    first = await read(page);
    if (from.every((id) => (first[id] ?? 0) > 0)) break;
    if (Date.now() > deadline) throw new Error(`${label}: no decoded frames from all of ${from.join(', ')}: ${JSON.stringify(first)}`);
    await sleep(250);
  }
  const growDeadline = Date.now() + 10_000;
  for (;;) {
    await sleep(500);
    const now = await read(page);
    if (from.every((id) => (now[id] ?? 0) > (first[id] ?? 0) + 5)) return now;
    if (Date.now() > growDeadline) throw new Error(`${label}: frames stopped growing: ${JSON.stringify(first)} -> ${JSON.stringify(now)}`);
  }
}

export async function waitFor(fn, what, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

export function artifactPath(name) {
  mkdirSync(artifactsDir, { recursive: true });
  return join(artifactsDir, name);
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * A real coturn (Debian `coturn`) on a free loopback port with `use-auth-secret` (the scheme
 * `--turn-secret` speaks), relaying to loopback peers. Stopped by PID with `stop()`.
 */
export async function startTurn(secret) {
  const port = await new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolvePort(port));
    });
  });
  const dir = mkdtempSync(join(tmpdir(), 'mooyaho-turn-'));
  const child = spawn('turnserver', [
    '-n', '--listening-ip=127.0.0.1', '--relay-ip=127.0.0.1', `--listening-port=${port}`,
    '--use-auth-secret', `--static-auth-secret=${secret}`, '--realm=mooyaho.test',
    '--no-tls', '--no-dtls', '--allow-loopback-peers', '--no-cli', '--log-file=stdout',
    `--pidfile=${join(dir, 'turnserver.pid')}`, `--userdb=${join(dir, 'turndb')}`,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d) => { log += d; });
  child.stderr.on('data', (d) => { log += d; });
  await waitFor(() => /Total General servers/.test(log) || child.exitCode !== null, 'coturn to start', 15_000);
  if (child.exitCode !== null) throw new Error(`coturn exited with ${child.exitCode}:\n${log}`);
  return {
    port,
    logs: () => log,
    async stop() {
      await stopChild(child, 'SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A network namespace with its own address, joined to this one by a veth pair (needs root):
 * `address` is the namespace's end, `peer` this namespace's. `remove()` deletes both.
 */
export function createNamespace(tag) {
  const id = process.pid % 250;
  const name = `mooyaho-${tag}-${process.pid}`;
  const outside = `my${tag.slice(0, 4)}${id}h`;
  const inside = `my${tag.slice(0, 4)}${id}n`;
  const net = `10.231.${id}`;
  const run = (...args) => {
    const result = spawnSync('ip', args, { encoding: 'utf8' });
    if (result.status !== 0) throw new Error(`ip ${args.join(' ')}: ${result.stderr || result.error}`);
  };
  const remove = () => {
    spawnSync('ip', ['link', 'del', outside]);
    spawnSync('ip', ['netns', 'del', name]);
  };
  remove(); // a run killed earlier may have left them
  run('netns', 'add', name);
  try {
    run('link', 'add', outside, 'type', 'veth', 'peer', 'name', inside);
    run('link', 'set', inside, 'netns', name);
    run('addr', 'add', `${net}.1/24`, 'dev', outside);
    run('link', 'set', outside, 'up');
    run('netns', 'exec', name, 'ip', 'addr', 'add', `${net}.2/24`, 'dev', inside);
    run('netns', 'exec', name, 'ip', 'link', 'set', inside, 'up');
    run('netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up');
  } catch (e) {
    remove();
    throw e;
  }
  return { name, address: `${net}.2`, peer: `${net}.1`, outside, remove };
}

/**
 * Shapes what this host sends into `namespace` (its veth end's egress: the namespace's downlink)
 * to `kbit` per second with a drop-tail queue of `queueMs` at that rate, with `tc` (needs root).
 * `counts()` reads the packets the shaper sent and dropped; `remove()` takes it away (removing
 * the namespace does too).
 */
export function shapeDownlink(namespace, { kbit, queueMs }) {
  const dev = namespace.outside;
  const limit = Math.round((kbit * 1000) / 8 * (queueMs / 1000));
  // A bucket of one full-size packet: a larger one lets a short burst (a bandwidth probe) through
  // at line rate, so the path looks faster than it is.
  execFileSync('tc', ['qdisc', 'replace', 'dev', dev, 'root', 'tbf', 'rate', `${kbit}kbit`, 'burst', '1600', 'limit', `${limit}`]);
  return {
    counts() {
      const listing = execFileSync('tc', ['-s', 'qdisc', 'show', 'dev', dev], { encoding: 'utf8' });
      const m = /Sent \d+ bytes (\d+) pkt \(dropped (\d+)/.exec(listing);
      if (!m) throw new Error(`no tbf statistics on ${dev}:\n${listing}`);
      return { sent: Number(m[1]), dropped: Number(m[2]) };
    },
    remove() {
      spawnSync('tc', ['qdisc', 'del', 'dev', dev, 'root']);
    },
  };
}

/**
 * A page of `browser` with a connected client (`window.mooyaho`) in SFU channel `channelId`;
 * with `camera` ([width, height]) it publishes that resolution (simulcast by default). Errors
 * the SDK reports are kept in `window.errors`, dynacast's `subscribedQualities` (as "q,h,f"
 * strings) in `window.qualities`. Resolves `{ page, id }`.
 */
export async function joinSfu(browser, server, channelId, camera) {
  const page = await sdkPage(browser, server);
  const id = await page.evaluate(async ({ url, channelId, camera }) => {
    const mooyaho = new window.Mooyaho({ url });
    window.mooyaho = mooyaho;
    window.errors = [];
    window.qualities = [];
    mooyaho.addEventListener('error', (e) => window.errors.push({ code: e.code, message: e.message }));
    mooyaho.addEventListener('subscribedQualities', (e) => window.qualities.push(e.qualities.join(',')));
    const id = await mooyaho.connect();
    await mooyaho.integrateUser({ id, name: camera ? 'publisher' : 'viewer' });
    if (camera) await mooyaho.createUserMedia({ audio: false, video: { width: { exact: camera[0] }, height: { exact: camera[1] } } });
    await mooyaho.enter(channelId);
    return id;
  }, { url: server.url, channelId, camera });
  return { page, id };
}

/** A viewer's (from `joinSfu`) inbound video from `publisher`: decoded width, frames, packets received and lost so far. */
export const inboundVideo = (viewer, publisher) => viewer.page.evaluate(async (publisher) => {
  const pc = window.mooyaho.sfuPeers.subscriber;
  const track = window.mooyaho.remoteStreams.get(publisher)?.getVideoTracks()[0];
  const out = { width: 0, frames: 0, packets: 0, lost: 0 };
  if (!pc || !track) return out;
  (await pc.getStats(track)).forEach((r) => {
    if (r.type !== 'inbound-rtp' || r.kind !== 'video') return;
    out.width = r.frameWidth ?? 0;
    out.frames = r.framesDecoded ?? 0;
    out.packets = r.packetsReceived ?? 0;
    out.lost = r.packetsLost ?? 0;
  });
  return out;
}, publisher);

/**
 * Drops every UDP datagram from or to `ports` with an nftables table of its own (needs root):
 * on this host (on loopback both directions pass the input hook), or with `netns` inside that
 * namespace for what arrives from outside it (its own loopback is left alone, like a firewall
 * in front of a host). `dropped()` counts what the rule dropped; `heal()` removes the table.
 */
export function blockUdp(ports, { netns } = {}) {
  const table = `mooyaho_test_${process.pid}_${ports[0]}`;
  const run = (args, options) => (netns
    ? execFileSync('ip', ['netns', 'exec', netns, 'nft', ...args], options)
    : execFileSync('nft', args, options));
  const nft = (...args) => run(args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const set = `{ ${ports.join(', ')} }`;
  const outside = netns ? ['iifname', '!=', 'lo'] : [];
  nft('add', 'table', 'inet', table);
  nft('add', 'chain', 'inet', table, 'input', '{ type filter hook input priority 0; policy accept; }');
  nft('add', 'rule', 'inet', table, 'input', ...outside, 'udp', 'sport', set, 'counter', 'drop');
  nft('add', 'rule', 'inet', table, 'input', ...outside, 'udp', 'dport', set, 'counter', 'drop');
  return {
    dropped() {
      const listing = run(['list', 'table', 'inet', table], { encoding: 'utf8' });
      return [...listing.matchAll(/counter packets (\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
    },
    heal() {
      try {
        nft('delete', 'table', 'inet', table);
      } catch {
        // Not there (healed already).
      }
    },
  };
}
