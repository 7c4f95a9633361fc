// Resume: a page's socket is dropped; the SDK reconnects with backoff, resumes the same session
// with its single-use token (no re-enter), and keeps receiving media and signaling.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { assertDecodingFrom, connectClient, frames, launchBrowser, sdkPage, startServer, waitFor } from './helpers.mjs';

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
