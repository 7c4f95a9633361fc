// A Chromium page that joins with only a join token (no integrateUser, anonymous mode off) meets
// an integrated member in a mesh channel; media flows both ways.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createJoinToken } from '../dist/server.js';
import { connectClient, launchBrowser, sdkPage, startServer, waitFor } from './helpers.mjs';

let server;
let browser;
before(async () => {
  server = await startServer([], { anonymous: false });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

test('a page with only a token joins its channel and talks to an integrated member', async () => {
  const channel = await server.api.createChannel();
  const other = await server.api.createChannel();
  const bobPage = await sdkPage(browser, server);
  const bobId = await connectClient(bobPage, server);
  await server.api.integrateUser(bobId, { id: 'bob', name: 'Bob' });
  await waitFor(() => bobPage.evaluate(() => window.events.some((e) => e.type === 'integrated')), 'bob integrated');
  await bobPage.evaluate((c) => window.mooyaho.enter(c), channel.id);

  const token = createJoinToken(server.apiKey, { userId: 'ada', name: 'Ada', channel: channel.id });
  const adaPage = await sdkPage(browser, server);
  const ada = await adaPage.evaluate(async ({ url, token, other, channel }) => {
    const mooyaho = new window.Mooyaho({ url, token });
    window.mooyaho = mooyaho;
    window.events = [];
    mooyaho.addEventListener('peerConnected', (p) => window.events.push({ type: 'peerConnected', sessionId: p.sessionId }));
    const id = await mooyaho.connect();
    await mooyaho.createUserMedia({ audio: true, video: { width: 320, height: 240 } });
    let otherCode = null;
    try {
      await mooyaho.enter(other);
    } catch (e) {
      otherCode = e.code;
    }
    await mooyaho.enter(channel);
    return { id, otherCode, users: mooyaho.sessionsArray.map((s) => s.user) };
  }, { url: server.url, token, other: other.id, channel: channel.id });
  assert.equal(ada.otherCode, 'forbidden');
  assert.deepEqual(
    ada.users.sort((a, b) => a.id.localeCompare(b.id)),
    [{ id: 'ada', name: 'Ada' }, { id: 'bob', name: 'Bob' }],
  );
  await waitFor(() => adaPage.evaluate((b) => window.events.some((e) => e.type === 'peerConnected' && e.sessionId === b), bobId), 'ada connected to bob');
  await waitFor(() => bobPage.evaluate((a) => window.events.some((e) => e.type === 'peerConnected' && e.sessionId === a), ada.id), 'bob connected to ada');
  await adaPage.close();
  await bobPage.close();
});
