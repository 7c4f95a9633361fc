// TURN: `mooyaho dev --turn-url … --turn-secret …` hands every integrated session short-lived
// credentials for a real coturn (`use-auth-secret`): in `connected {iceServers}` with a join
// token, else with `integrated` (anyone can open a socket; only the backend's users relay). Pages created with
// `iceTransportPolicy: 'relay'` can only reach anyone through that coturn: they decode each
// other in a mesh channel, an SFU channel and a direct call, on selected candidate pairs whose
// local end is a relay candidate. Bad TURN settings stop the server at startup with a reason.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createJoinToken } from '../dist/server.js';
import { assertDecodingFrom, connectClient, launchBrowser, repoRoot, sdkPage, sfuFrames, startServer, startTurn, waitFor } from './helpers.mjs';

const secret = 'turn-test-shared-secret-0123456789';
let turn;
let server;
let browser;
before(async () => {
  turn = await startTurn(secret);
  server = await startServer(['--turn-url', `turn:127.0.0.1:${turn.port}`, '--turn-secret', secret]);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
  await turn?.stop();
});

/** A relay-only page, connected and integrated as `name`, with its `connected` frame kept. */
async function relayPage(name, options = {}) {
  const page = await sdkPage(browser, server, {
    beforeLoad: (p) => p.addInitScript(() => {
      // Keep the `connected` and `integrated` frames, to check what the server handed out.
      const Native = WebSocket;
      window.WebSocket = class extends Native {
        constructor(...args) {
          super(...args);
          this.addEventListener('message', (e) => {
            const frame = JSON.parse(e.data);
            if (frame.type === 'connected' || frame.type === 'integrated') (window.seenFrames ??= []).push(frame);
          });
        }
      };
    }),
  });
  const id = await connectClient(page, server, { name, iceTransportPolicy: 'relay', ...options });
  return { page, id, name };
}

/** The candidate type of the local end of every connected PeerConnection's selected pair. */
const localCandidateTypes = (page) => page.evaluate(async () => {
  const pcs = [...window.mooyaho.peers.values(), ...Object.values(window.mooyaho.sfuPeers).filter(Boolean)];
  const types = [];
  for (const pc of pcs) {
    const stats = await pc.getStats();
    stats.forEach((r) => {
      if (r.type !== 'transport' || !r.selectedCandidatePairId) return;
      types.push(stats.get(stats.get(r.selectedCandidatePairId)?.localCandidateId)?.candidateType);
    });
  }
  return types;
});

async function assertRelayed(client, count) {
  const types = await localCandidateTypes(client.page);
  assert.equal(types.length, count, `${client.name}: selected pairs ${types}`);
  assert.ok(types.every((t) => t === 'relay'), `${client.name}: ${types}`);
}

test('integrated sessions get coturn credentials in the use-auth-secret scheme, others none', async () => {
  const { page, id } = await relayPage('Ada');
  const [connected, integrated] = await page.evaluate(() => window.seenFrames);
  assert.equal(connected.type, 'connected');
  assert.equal(connected.iceServers, undefined, 'no credentials before the session has a user');
  assert.equal(integrated.type, 'integrated');
  assert.equal(integrated.iceServers.length, 1);
  const [ice] = integrated.iceServers;
  assert.deepEqual(ice.urls, [`turn:127.0.0.1:${turn.port}`]);
  const [expiry, user] = ice.username.split(':');
  assert.equal(user, id);
  const lifetime = Number(expiry) - Date.now() / 1000;
  assert.ok(lifetime > 6 * 3600 - 60 && lifetime <= 6 * 3600 + 5, `lifetime ${lifetime} s`);
  const { createHmac } = await import('node:crypto');
  assert.equal(ice.credential, createHmac('sha1', secret).update(ice.username).digest('base64'));
  await page.close();

  // A join token integrates at connect: `connected` itself carries them.
  const channel = await server.api.createChannel(false);
  const token = createJoinToken(server.apiKey, { userId: 'tok-user', channel: channel.id });
  const tokenPage = await sdkPage(browser, server);
  const frame = await tokenPage.evaluate(({ url, token }) => new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/websocket?token=${encodeURIComponent(token)}`);
    ws.onmessage = (e) => { resolve(JSON.parse(e.data)); ws.close(); };
    ws.onerror = () => reject(new Error('socket failed'));
  }), { url: server.url, token });
  assert.equal(frame.type, 'connected');
  assert.equal(frame.iceServers?.[0]?.username.split(':')[1], frame.id);
  await tokenPage.close();
});

test('mesh channel: relay-only pages decode each other through coturn', async () => {
  const channel = await server.api.createChannel(false);
  const clients = [await relayPage('Ada'), await relayPage('Bob')];
  for (const c of clients) await c.page.evaluate((ch) => window.mooyaho.enter(ch), channel.id);
  for (const me of clients) {
    const other = clients.find((c) => c !== me);
    await assertDecodingFrom(me.page, [other.id], me.name);
    await assertRelayed(me, 1);
  }
  for (const c of clients) await c.page.close();
});

test('SFU channel: relay-only pages decode each other through coturn and the node', async () => {
  const channel = await server.api.createChannel(true);
  const clients = [await relayPage('Ada'), await relayPage('Bob')];
  for (const c of clients) await c.page.evaluate((ch) => window.mooyaho.enter(ch), channel.id);
  for (const me of clients) {
    const other = clients.find((c) => c !== me);
    await assertDecodingFrom(me.page, [other.id], me.name, sfuFrames);
    await waitFor(async () => (await localCandidateTypes(me.page)).length === 2, `${me.name}: both SFU PeerConnections connected`);
    await assertRelayed(me, 2);
  }
  // The node saw the media arrive from coturn's relay addresses like from any validated path.
  for (const c of clients) await c.page.close();
});

test('direct call: relay-only caller and callee decode each other through coturn', async () => {
  const caller = await relayPage('Ada', { allowDirectCall: true });
  const callee = await relayPage('Bob', { allowDirectCall: true });
  await callee.page.evaluate(() => window.mooyaho.addEventListener('incomingCall', (call) => call.accept()));
  await caller.page.evaluate((to) => window.mooyaho.directCall(to), callee.id);
  await assertDecodingFrom(caller.page, [callee.id], 'caller');
  await assertDecodingFrom(callee.page, [caller.id], 'callee');
  await assertRelayed(caller, 1);
  await assertRelayed(callee, 1);
  await caller.page.close();
  await callee.page.close();
});

test('bad TURN settings stop the server with a reason', () => {
  const binary = process.env.MOOYAHO_BIN ?? join(repoRoot, 'target/debug/mooyaho');
  const dataDir = mkdtempSync(join(tmpdir(), 'mooyaho-turn-settings-'));
  for (const [args, reason] of [
    [['--turn-url', 'http://127.0.0.1:3478', '--turn-secret', secret], /not a TURN URL/],
    [['--turn-url', 'turn:127.0.0.1:3478'], /shared secret/],
    [['--turn-url', 'turn:127.0.0.1:3478', '--turn-secret', 'short'], /shared secret/],
    [['--turn-secret', secret], /without --turn-url/],
    [['--turn-url', 'turn:127.0.0.1:3478', '--turn-secret', secret, '--turn-ttl-secs', '5'], /lifetime/],
  ]) {
    const run = spawnSync(binary, ['dev', '--listen', '127.0.0.1:0', '--data-dir', dataDir, ...args], { encoding: 'utf8', timeout: 20_000 });
    assert.notEqual(run.status, 0, `${args.join(' ')} started`);
    assert.match(run.stderr, reason, args.join(' '));
  }
  rmSync(dataDir, { recursive: true, force: true });
});
