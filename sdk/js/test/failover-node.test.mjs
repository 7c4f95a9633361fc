// SFU failover with the client SDK running in Node (issue 13: "the Rust/Node test clients"
// recover from `sfuRestart` with no application code). The same bundle the browser loads
// (`dist/mooyaho.js`) runs on `@roamhq/wrtc` (libwebrtc for Node) with a synthetic camera and
// microphone (`node-webrtc.mjs`). A real fleet — `mooyaho server` and two `mooyaho sfu` — hosts one
// SFU channel with three Node clients; the node hosting it is SIGKILLed; every client must decode
// every other one's video again, on new PeerConnections the SDK made by itself.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { artifactPath, sleep, startFleet, waitFor } from './helpers.mjs';
import { FrameCounter, installNodeWebRtc, stopSyntheticMedia } from './node-webrtc.mjs';

installNodeWebRtc();
const { Mooyaho } = await import('../dist/mooyaho.js');

const skip = process.env.MOOYAHO_SFU_E2E === '0' ? { skip: 'MOOYAHO_SFU_E2E=0' } : {};

let fleet;
const counter = new FrameCounter();
const clients = [];
before(async () => {
  fleet = await startFleet(2);
});
after(async () => {
  for (const { mooyaho } of clients) mooyaho.dispose();
  counter.stop();
  stopSyntheticMedia();
  await fleet?.stop();
});

async function join(channelId, name) {
  const mooyaho = new Mooyaho({ url: fleet.url });
  const events = [];
  for (const type of ['sfuRestart', 'reconnecting', 'reconnected', 'error']) {
    mooyaho.addEventListener(type, (p) => events.push({ type, what: p.what, reason: p.reason, code: p.code, at: Date.now() }));
  }
  const id = await mooyaho.connect();
  await mooyaho.createUserMedia({ audio: true, video: true });
  await mooyaho.integrateUser({ id, name });
  await mooyaho.enter(channelId);
  const client = { mooyaho, id, name, events };
  clients.push(client);
  return client;
}

/**
 * Decoded frames per remote session, counting only video tracks the current subscribe
 * PeerConnection receives; `null` while that PeerConnection is `stale` (the one from before the kill).
 */
function frames(client, stale = null) {
  const pc = client.mooyaho.sfuPeers.subscriber;
  if (!pc || pc === stale) return null;
  const receiving = new Set(pc.getReceivers().map((r) => r.track));
  const out = {};
  for (const [id, stream] of client.mooyaho.remoteStreams) {
    const track = stream.getVideoTracks().find((t) => receiving.has(t));
    if (track) out[id] = counter.frames(track);
  }
  return out;
}

/** Waits until `client` decodes every one of `others` and the counts keep growing. */
async function decoding(client, others, label, stale = null) {
  let first;
  await waitFor(() => {
    first = frames(client, stale);
    return first && others.every((id) => (first[id] ?? 0) > 0);
  }, `${label}: decoding ${others.join(', ')} (${JSON.stringify(first)})`, 20_000);
  await waitFor(() => {
    const now = frames(client, stale);
    return now && others.every((id) => (now[id] ?? 0) > first[id] + 5);
  }, `${label}: frames growing`, 10_000);
}

test('SIGKILL of the hosting SFU node: Node clients (SDK on @roamhq/wrtc) decode every remote video again, with no application code', skip, async () => {
  const channel = await fleet.api.createChannel(true);
  const members = [];
  for (const name of ['Ada', 'Bob', 'Cy']) members.push(await join(channel.id, name));
  const othersOf = (me) => members.filter((c) => c !== me).map((c) => c.id);
  for (const me of members) await decoding(me, othersOf(me), `${me.name} before the kill`);

  const host = (await fleet.api.getChannel(channel.id)).sfuServerId;
  const dead = fleet.nodeIds.indexOf(host);
  assert.ok(dead >= 0, `placed on a fleet node (${host})`);
  const survivor = fleet.nodeIds[1 - dead];
  const stale = new Map(members.map((c) => [c, c.mooyaho.sfuPeers.subscriber]));

  const killedAt = Date.now();
  await fleet.kill(dead);
  // Recovered: every other member's video decoded on a subscribe PeerConnection made after the
  // kill, and seen advancing.
  const recoveredAt = new Map();
  const seen = new Map();
  while (recoveredAt.size < members.length && Date.now() < killedAt + 30_000) {
    for (const me of members) {
      if (recoveredAt.has(me)) continue;
      const now = frames(me, stale.get(me));
      const last = seen.get(me);
      if (now && last && othersOf(me).every((id) => (now[id] ?? 0) > 0 && (now[id] ?? 0) > (last[id] ?? 0))) {
        recoveredAt.set(me, Date.now());
      }
      if (now) seen.set(me, now);
    }
    await sleep(50);
  }
  const times = Object.fromEntries(members.map((c) => [c.name, recoveredAt.has(c) ? recoveredAt.get(c) - killedAt : null]));
  const lastRecovery = recoveredAt.size === members.length ? Math.max(...recoveredAt.values()) - killedAt : null;
  // Where the time goes: told (`sfuRestart`), new PeerConnections connected (`reconnected`).
  const since = (c, type) => (c.events.find((e) => e.type === type)?.at ?? NaN) - killedAt;
  const steps = Object.fromEntries(members.map((c) => [c.name, { told: since(c, 'sfuRestart'), connected: since(c, 'reconnected') }]));
  console.log(`failover (Node clients): kill → last client's remote videos advancing again: ${lastRecovery} ms; per client ${JSON.stringify(times)}; steps ${JSON.stringify(steps)}`);
  writeFileSync(artifactPath('failover-node.json'), JSON.stringify({ killToLastRecoveryMs: lastRecovery, perClientMs: times, steps, clients: members.length, nodes: 2 }, null, 2));
  assert.ok(lastRecovery !== null, `not every client recovered within 30 s: ${JSON.stringify(times)}`);

  assert.equal((await fleet.api.getChannel(channel.id)).sfuServerId, survivor);
  for (const me of members) {
    await decoding(me, othersOf(me), `${me.name} after the failover`, stale.get(me));
    const told = me.events.map((e) => [e.type, e.what, e.reason].filter(Boolean).join(':'));
    assert.equal(told.filter((e) => e === 'sfuRestart').length, 1, `${me.name}: ${told}`);
    assert.ok(told.includes('reconnecting:sfu:sfuRestart'), `${me.name}: ${told}`);
    assert.ok(told.includes('reconnected:sfu'), `${me.name}: ${told}`);
    assert.deepEqual(me.events.filter((e) => e.type === 'error'), [], `${me.name}: no error`);
  }
});
