// The client SDK's SFU flow (publish PC answered by the SFU, subscribe PC offered and re-offered
// by it, streams keyed by publishing session) against a stand-in SFU (test/fake-sfu.mjs), so that
// the SDK's side of the contract is checked apart from the node (test/sfu.test.mjs runs the real
// one). Signaling other than `isSFU` goes to the real server.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startFakeSfu } from './fake-sfu.mjs';
import { assertDecodingFrom, connectClient, launchBrowser, sfuFrames, startServer, waitFor } from './helpers.mjs';

let server;
let browser;
let sfu;
before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  sfu = await startFakeSfu(browser, server);
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

async function joinSfu(channelId, name) {
  const page = await browser.context.newPage();
  page.on('pageerror', (e) => console.error(`[${name}]`, e.message));
  await sfu.attach(page);
  await page.goto(`${server.url}/demo/test.html`);
  await page.waitForFunction(() => window.sdkReady === true);
  const id = await connectClient(page, server, { name });
  await page.evaluate((c) => window.mooyaho.enter(c), channelId);
  return { page, id, name };
}

const streams = (p) => p.page.evaluate(() => [...window.mooyaho.remoteStreams.keys()].sort());

test('SFU channel: publish + one re-offered subscribe PC per client, late joiner, leaver', async () => {
  const channel = await server.api.createChannel(true);
  const clients = [];
  for (const name of ['Ada', 'Bob', 'Cy']) clients.push(await joinSfu(channel.id, name));

  const expectAllSeeAll = async (label) => {
    for (const me of clients) {
      const others = clients.filter((c) => c !== me).map((c) => c.id);
      await waitFor(async () => JSON.stringify(await streams(me)) === JSON.stringify([...others].sort()), `${me.name} streams (${label})`);
      await assertDecodingFrom(me.page, others, `${me.name} (${label})`, sfuFrames);
    }
  };
  await expectAllSeeAll('3 joined');
  for (const me of clients) {
    const state = await me.page.evaluate(() => ({
      mesh: window.mooyaho.peers.size,
      publishing: window.events.some((e) => e.type === 'sfuPeerConnected'),
      subscribed: window.events.some((e) => e.type === 'peerConnected' && e.sessionId === null),
      errors: window.events.filter((e) => e.type === 'error'),
    }));
    assert.deepEqual(state, { mesh: 0, publishing: true, subscribed: true, errors: [] }, me.name);
  }

  // A fourth joins late: every subscribe PC is re-offered and everyone sees everyone.
  const offersBefore = await sfu.offers();
  clients.push(await joinSfu(channel.id, 'Dee'));
  await expectAllSeeAll('late joiner');
  assert.ok((await sfu.offers()) >= offersBefore + 3, 'the three earlier subscribers were re-offered');

  // One leaves: the others drop its stream and keep decoding the rest.
  const leaver = clients.splice(1, 1)[0];
  await leaver.page.evaluate(() => window.mooyaho.leave());
  assert.deepEqual(await leaver.page.evaluate(() => [window.mooyaho.remoteStreams.size, window.mooyaho.sfuPeers.subscriber]), [0, null]);
  await expectAllSeeAll('after a leave');

  // The SFU stops forwarding a publisher that is still a member (its re-offer marks the m-lines
  // inactive): subscribers drop that stream from the re-offer alone, no `left` involved.
  const [unpublished, ...rest] = clients;
  await sfu.page.evaluate((id) => window.sfu.leave(id), unpublished.id);
  for (const me of rest) {
    const others = rest.filter((c) => c !== me).map((c) => c.id).sort();
    await waitFor(async () => JSON.stringify(await streams(me)) === JSON.stringify(others), `${me.name} to drop the unpublished stream`);
    assert.ok(await me.page.evaluate((id) => window.mooyaho.sessions.has(id), unpublished.id), 'still a member');
  }

  // A viewer enters without a camera (subscribe only), then turns it on: it starts publishing
  // and the others receive it, with no re-enter.
  const senders = rest;
  const viewerPage = await browser.context.newPage();
  await sfu.attach(viewerPage);
  await viewerPage.goto(`${server.url}/demo/test.html`);
  await viewerPage.waitForFunction(() => window.sdkReady === true);
  const viewerId = await viewerPage.evaluate(async ({ url, channel }) => {
    window.mooyaho = new window.Mooyaho({ url });
    const id = await window.mooyaho.connect();
    await window.mooyaho.integrateUser({ id, name: 'Viewer' });
    await window.mooyaho.enter(channel);
    return id;
  }, { url: server.url, channel: channel.id });
  const viewer = { page: viewerPage, id: viewerId, name: 'Viewer' };
  await assertDecodingFrom(viewerPage, senders.map((c) => c.id), 'viewer (subscribe only)', sfuFrames);
  assert.equal(await viewerPage.evaluate(() => window.mooyaho.sfuPeers.publisher), null);
  await viewerPage.evaluate(() => window.mooyaho.createUserMedia({ video: { width: 320, height: 240 }, audio: true }));
  for (const me of senders) await assertDecodingFrom(me.page, [viewerId], `${me.name} sees the late publisher`, sfuFrames);
  for (const c of [...clients, leaver, viewer]) await c.page.close();
});
