// Resume: a page's socket is dropped; the SDK reconnects with backoff, resumes the same session
// with its single-use token (no re-enter), and keeps receiving media and signaling.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { assertDecodingFrom, connectClient, frames, launchBrowser, sdkPage, sfuFrames, startServer, waitFor } from './helpers.mjs';

let server;
let browser;
before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

const enter = (page, channel) => page.evaluate((c) => window.mooyaho.enter(c), channel);
const events = (page, type) => page.evaluate((t) => window.events.filter((e) => e.type === t), type);

test('a dropped socket is resumed: same session, same channel, media and signaling keep flowing', async () => {
  const channel = await server.api.createChannel(false);
  const ada = await sdkPage(browser, server);
  const bob = await sdkPage(browser, server);
  const adaId = await connectClient(ada, server, { name: 'Ada' });
  const bobId = await connectClient(bob, server, { name: 'Bob' });
  await enter(ada, channel.id);
  await enter(bob, channel.id);
  await assertDecodingFrom(ada, [bobId], 'Ada before drop');

  // Drop it twice: the second resume proves the SDK kept the fresh single-use token.
  for (let round = 1; round <= 2; round++) {
    const before = (await frames(ada))[bobId];
    await ada.evaluate(() => window.mooyaho.socket.ws.close());
    await waitFor(async () => (await events(ada, 'reconnected')).length === round, `reconnected #${round}`);
    const reconnected = await events(ada, 'reconnected');
    assert.equal(reconnected[round - 1].sessionId, adaId);
    assert.equal(await ada.evaluate(() => window.mooyaho.sessionId), adaId);
    assert.equal(await ada.evaluate(() => window.mooyaho.channelId), channel.id);
    const counts = await assertDecodingFrom(ada, [bobId], `Ada after drop #${round}`);
    assert.ok(counts[bobId] > before, `frames grew across the drop: ${before} -> ${counts[bobId]}`);
  }
  // Resumed, not re-created: no second `connected`, no error, and the server still lists Ada once.
  assert.equal((await events(ada, 'connected')).length, 1);
  assert.deepEqual(await events(ada, 'error'), []);
  const members = await server.api.getChannel(channel.id);
  assert.deepEqual(members.channelSessions.map((s) => s.sessionId).sort(), [adaId, bobId].sort());

  // Signaling works both ways on the resumed socket: chat, and a newcomer Ada must offer to.
  await bob.evaluate(() => window.mooyaho.sendMessage('still there?'));
  await waitFor(async () => (await events(ada, 'messaged')).some((e) => e.sessionId === bobId), 'Ada to get chat');
  const cy = await sdkPage(browser, server);
  const cyId = await connectClient(cy, server, { name: 'Cy' });
  await enter(cy, channel.id);
  await assertDecodingFrom(cy, [adaId, bobId], 'Cy');
  await assertDecodingFrom(ada, [bobId, cyId], 'Ada after Cy joined');
  for (const p of [ada, bob, cy]) await p.close();
});

/**
 * Puts the page's WebSockets through a proxy the test controls: `block` refuses new sockets,
 * `dead = last` silences the current one in both directions (a half-open connection that TCP
 * has not noticed: only the app-level heartbeat can tell), `dropPublish > 0` closes the socket
 * instead of passing on an SFU publish request (that many times), `holdPublishAnswer > 0` holds
 * the server's reply to a publish back and hands it to the page just after its next publish
 * request went out (a reply later than the SDK's request timeout).
 */
async function proxied(page, ctl) {
  await page.routeWebSocket(/\/websocket/, (ws) => {
    if (ctl.block) {
      ws.close();
      return;
    }
    const server = ws.connectToServer();
    const conn = {};
    ctl.last = conn;
    ws.onMessage((m) => {
      if (ctl.dropPublish > 0 && /"type":"call"/.test(m) && /"isSFU":true/.test(m)) {
        ctl.dropPublish -= 1;
        ws.close();
        server.close();
        return;
      }
      if (ctl.held && /"type":"call"/.test(m) && /"isSFU":true/.test(m)) {
        ws.send(ctl.held);
        ctl.held = null;
      }
      if (ctl.dead !== conn) server.send(m);
    });
    server.onMessage((m) => {
      if (ctl.holdPublishAnswer > 0 && /"type":"answered"/.test(m) && /"isSFU":true/.test(m)) {
        ctl.holdPublishAnswer -= 1;
        ctl.held = m;
        return;
      }
      if (ctl.dead !== conn) ws.send(m);
    });
  });
}

/** Bob, then Ada (her socket through `proxied(ctl)`), both with cameras, enter a new SFU channel. */
async function publishingPairInSfuChannel(ctl) {
  const channel = await server.api.createChannel(true);
  const ada = await sdkPage(browser, server, { beforeLoad: (p) => proxied(p, ctl) });
  const bob = await sdkPage(browser, server);
  const adaId = await connectClient(ada, server, { name: 'Ada' });
  const bobId = await connectClient(bob, server, { name: 'Bob' });
  await enter(bob, channel.id);
  await enter(ada, channel.id);
  return { ada, bob, adaId, bobId };
}

test('an SFU publish cut off by a dropped socket is sent again once the session resumed', async () => {
  const ctl = { block: false, dead: null, last: null, dropPublish: 1 };
  const { ada, bob, adaId, bobId } = await publishingPairInSfuChannel(ctl);
  await waitFor(async () => ctl.dropPublish === 0, 'the publish request cut off');
  await waitFor(async () => (await events(ada, 'reconnected')).length === 1, 'resumed');
  await assertDecodingFrom(bob, [adaId], 'Bob sees Ada (publish sent again)', sfuFrames);
  await assertDecodingFrom(ada, [bobId], 'Ada sees Bob', sfuFrames);
  assert.equal(await ada.evaluate(() => window.mooyaho.sessionId), adaId);
  assert.deepEqual(await events(ada, 'error'), [], 'a retried publish is not an error');
  await ada.close();
  await bob.close();
});

test('a publish answer later than the request timeout is not applied to the publish sent again', async () => {
  const ctl = { block: false, dead: null, last: null, holdPublishAnswer: 1, held: null };
  const { ada, bob, adaId, bobId } = await publishingPairInSfuChannel(ctl);
  // The first answer is held past the SDK's 10 s timeout, then arrives right after the retry
  // went out: applied to the retry's PeerConnection it would pair it with the node's first
  // transport, which the retry replaced.
  await waitFor(async () => ctl.holdPublishAnswer === 0 && ctl.held === null, 'the late answer delivered', 30_000);
  await assertDecodingFrom(bob, [adaId], 'Bob sees Ada (the retry answered)', sfuFrames);
  await assertDecodingFrom(ada, [bobId], 'Ada sees Bob', sfuFrames);
  assert.deepEqual(await events(ada, 'error'), [], 'a retried publish is not an error');
  await ada.close();
  await bob.close();
});

test('a silent socket is detected by the heartbeat and resumed', async () => {
  const channel = await server.api.createChannel(false);
  const ctl = { block: false, dead: null, last: null };
  const ada = await sdkPage(browser, server, { beforeLoad: (p) => proxied(p, ctl) });
  const bob = await sdkPage(browser, server);
  const adaId = await connectClient(ada, server, { name: 'Ada', heartbeatMs: 1000 });
  const bobId = await connectClient(bob, server, { name: 'Bob' });
  await enter(ada, channel.id);
  await enter(bob, channel.id);
  await assertDecodingFrom(ada, [bobId], 'Ada');

  const silencedAt = Date.now();
  ctl.dead = ctl.last; // no close frame, no error: the socket just goes quiet
  await waitFor(async () => (await events(ada, 'reconnected')).length === 1, 'heartbeat-driven resume', 10_000);
  assert.ok(Date.now() - silencedAt < 6000, `detected within a few heartbeats (${Date.now() - silencedAt} ms)`);
  assert.equal(await ada.evaluate(() => window.mooyaho.sessionId), adaId);
  await bob.evaluate(() => window.mooyaho.sendMessage('after the silence'));
  await waitFor(async () => (await events(ada, 'messaged')).length === 1, 'chat on the resumed socket');
  await assertDecodingFrom(ada, [bobId], 'Ada after resume');
  await ada.close();
  await bob.close();
});

test('after the grace window the SDK starts a fresh session and releases the old channel', async () => {
  const shortGrace = await startServer(['--resume-grace-ms', '300']);
  try {
    const channel = await shortGrace.api.createChannel(false);
    const ctl = { block: false, dead: null, last: null };
    const ada = await sdkPage(browser, shortGrace, { beforeLoad: (p) => proxied(p, ctl) });
    const bob = await sdkPage(browser, shortGrace);
    const adaId = await connectClient(ada, shortGrace, { name: 'Ada' });
    const bobId = await connectClient(bob, shortGrace, { name: 'Bob' });
    await enter(ada, channel.id);
    await enter(bob, channel.id);
    await assertDecodingFrom(ada, [bobId], 'Ada');

    ctl.block = true; // reconnect attempts fail until the grace window is over
    await ada.evaluate(() => window.mooyaho.socket.ws.close());
    await waitFor(async () => (await events(bob, 'left')).some((e) => e.sessionId === adaId), 'Bob to see Ada leave');
    ctl.block = false;
    await waitFor(async () => (await events(ada, 'connected')).length === 2, 'a fresh session', 20_000);
    const after = await ada.evaluate(() => ({
      id: window.mooyaho.sessionId, channel: window.mooyaho.channelId, peers: window.mooyaho.peers.size,
      streams: window.mooyaho.remoteStreams.size, sessions: window.mooyaho.sessions.size,
      errors: window.events.filter((e) => e.type === 'error').map((e) => e.code),
      closed: window.events.filter((e) => e.type === 'channelClosed').length,
    }));
    assert.notEqual(after.id, adaId);
    assert.deepEqual({ ...after, id: undefined }, {
      id: undefined, channel: '', peers: 0, streams: 0, sessions: 0, errors: ['invalid_token'], closed: 1,
    });
    assert.equal(await bob.evaluate(() => window.mooyaho.peers.size), 0);
    // The fresh session is fully usable: integrate and enter again, media flows.
    await ada.evaluate((id) => window.mooyaho.integrateUser({ id, name: 'Ada again' }), after.id);
    await enter(ada, channel.id);
    await assertDecodingFrom(bob, [after.id], 'Bob sees the fresh Ada');
    await ada.close();
    await bob.close();
  } finally {
    await shortGrace.stop();
  }
});

test('the SDK keeps the rotated resume token: a socket dropped after rotations still resumes', async () => {
  // Lifetime 4 s (the minimum for these ping/grace settings): a new token every 2 s, and the one
  // from `connected` is refused after 4 s, so only a client that kept the rotations can resume.
  const rotating = await startServer(['--ping-interval-ms', '500', '--resume-grace-ms', '1000', '--resume-token-lifetime-ms', '4000']);
  try {
    const ada = await sdkPage(browser, rotating);
    const adaId = await connectClient(ada, rotating, { name: 'Ada' });
    await new Promise((r) => setTimeout(r, 5000));
    await ada.evaluate(() => window.mooyaho.socket.ws.close());
    await waitFor(async () => (await events(ada, 'reconnected')).length === 1, 'reconnected', 10_000);
    assert.equal(await ada.evaluate(() => window.mooyaho.sessionId), adaId);
    assert.equal((await events(ada, 'connected')).length, 1);
    assert.deepEqual(await events(ada, 'error'), []);
    await ada.close();
  } finally {
    await rotating.stop();
  }
});
