// Client SDK contract details: promise rejections carry the server's error codes, nothing is
// left behind by a refused request, chat and media state reach the other members.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { connectClient, launchBrowser, sdkPage, startServer, waitFor } from './helpers.mjs';

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

const codeOf = (page, fn, arg) => page.evaluate(async ({ src, arg }) => {
  try {
    await (0, eval)(src)(window.mooyaho, arg);
    return 'resolved';
  } catch (e) {
    return e.code ?? String(e);
  }
}, { src: fn.toString(), arg });

test('connect() rejects when the server cannot be reached (no stale id)', async () => {
  const page = await sdkPage(browser, server);
  const result = await page.evaluate(async () => {
    const m = new window.Mooyaho({ url: 'http://127.0.0.1:9', requestTimeoutMs: 2000 });
    try {
      return `resolved ${await m.connect()}`;
    } catch (e) {
      return `${e.code}:${m.sessionId}`;
    }
  });
  assert.equal(result, 'disconnected:null');
  await page.close();
});

test('refusals reject with server codes and leave no state', async () => {
  const channel = await server.api.createChannel(false);
  const page = await sdkPage(browser, server);
  await connectClient(page, server);
  assert.equal(await codeOf(page, (m, c) => m.enter(c), channel.id), 'not_integrated');
  assert.equal(await codeOf(page, (m) => m.sendMessage('hi')), 'not_in_channel');
  assert.equal(await codeOf(page, (m) => m.directCall('someone')), 'invalid_state'); // allowDirectCall off
  await page.evaluate(() => window.mooyaho.integrateUser({ id: 'x', name: 'Ada' }));
  assert.equal(await codeOf(page, (m) => m.enter('no-such-channel')), 'channel_not_found');
  assert.deepEqual(await page.evaluate(() => [window.mooyaho.channelId, window.mooyaho.sessions.size]), ['', 0]);
  assert.equal(await codeOf(page, (m, c) => m.enter(c), channel.id), 'resolved');
  // A failed enter into another channel keeps the current one.
  assert.equal(await codeOf(page, (m) => m.enter('no-such-channel')), 'channel_not_found');
  assert.equal(await page.evaluate(() => window.mooyaho.channelId), channel.id);
  // After dispose every call fails fast instead of hanging.
  await page.evaluate(() => window.mooyaho.dispose());
  assert.equal(await codeOf(page, (m) => m.getSessions()), 'disconnected');
  await page.close();
});

test('chat, custom data and media state reach every member; getSessions lists them', async () => {
  const channel = await server.api.createChannel(false);
  const ada = await sdkPage(browser, server);
  const bob = await sdkPage(browser, server);
  const adaId = await connectClient(ada, server, { name: 'Ada' });
  const bobId = await connectClient(bob, server, { name: 'Bob' });
  for (const p of [ada, bob]) await p.evaluate((c) => window.mooyaho.enter(c), channel.id);

  const sessions = await bob.evaluate(() => window.mooyaho.getSessions());
  assert.deepEqual(sessions.map((s) => s.id).sort(), [adaId, bobId].sort());
  assert.equal(sessions.find((s) => s.id === adaId).user.name, 'Ada');

  const got = await ada.evaluate(async () => {
    const received = new Promise((resolve) => {
      const seen = [];
      window.mooyaho.addEventListener('messaged', ({ message, isSelf }) => {
        seen.push({ message, isSelf });
        if (seen.length === 2) resolve(seen);
      });
    });
    await window.mooyaho.sendMessage('hello');
    await window.mooyaho.sendMessage({ reaction: '👍' });
    return received;
  });
  assert.deepEqual(got, [
    { message: { type: 'text', text: 'hello' }, isSelf: true },
    { message: { type: 'custom', data: { reaction: '👍' } }, isSelf: true },
  ]);
  await waitFor(async () => (await bob.evaluate(() => window.events.filter((e) => e.type === 'messaged').length)) === 2, 'Bob to get both');

  await ada.evaluate(() => window.mooyaho.updateMediaState('videoOff', true));
  assert.equal(await ada.evaluate(() => window.mooyaho.getMyStream().getVideoTracks()[0].enabled), false);
  await waitFor(() => bob.evaluate((id) => window.mooyaho.sessions.get(id)?.state.videoOff === true, adaId), 'Bob to see videoOff');
  await ada.close();
  await bob.close();
});
