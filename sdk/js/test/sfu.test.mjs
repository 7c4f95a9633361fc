// SFU channels through the real media plane: `mooyaho dev` runs an embedded SFU node. Three
// pages decode each other through the node (no peer-to-peer PeerConnection exists, and the
// selected ICE pairs end at the node's address), a fourth joins late and is seen by all, a
// leaver is dropped and a new publisher reuses its m-lines. With no usable node the server's `sfu_unavailable` surfaces as an `error`.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { artifactPath, assertDecodingFrom, connectClient, launchBrowser, sdkPage, sfuFrames, sleep, startServer, waitFor } from './helpers.mjs';

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

// The media tests run against the real embedded node. (They were opt-in while the node keyed
// its DTLS association by address and lost handshakes that Chromium moved to a later-nominated
// candidate pair; the association now follows the transport. MOOYAHO_SFU_E2E=0 skips them.)
const nodeMedia = process.env.MOOYAHO_SFU_E2E === '0'
  ? { skip: 'MOOYAHO_SFU_E2E=0' }
  : {};

async function joinSfu(channelId, name) {
  const page = await sdkPage(browser, server);
  const id = await connectClient(page, server, { name });
  await page.evaluate((c) => window.mooyaho.enter(c), channelId);
  return { page, id, name };
}

/** Where each SFU PeerConnection's selected ICE pair ends, and the node's advertised candidates. */
const sfuPaths = (page) => page.evaluate(async () => {
  const out = {};
  for (const [name, pc] of Object.entries(window.mooyaho.sfuPeers)) {
    const stats = await pc.getStats();
    let remote = null;
    stats.forEach((r) => {
      if (r.type !== 'transport' || !r.selectedCandidatePairId) return;
      const candidate = stats.get(stats.get(r.selectedCandidatePairId)?.remoteCandidateId);
      if (candidate) remote = `${candidate.address ?? candidate.ip}:${candidate.port}`;
    });
    const advertised = [...pc.remoteDescription.sdp.matchAll(/a=candidate:\S+ \d+ \S+ \d+ (\S+) (\d+) typ/g)].map((m) => `${m[1]}:${m[2]}`);
    out[name] = { remote, advertised };
  }
  return out;
});

test('SFU channel: three pages decode each other through the node; a late fourth is seen by all', nodeMedia, async () => {
  const channel = await server.api.createChannel(true);
  const clients = [];
  for (const name of ['Ada', 'Bob', 'Cy']) clients.push(await joinSfu(channel.id, name));

  const expectAllSeeAll = async (label) => {
    for (const me of clients) {
      const others = clients.filter((c) => c !== me).map((c) => c.id);
      await waitFor(async () => {
        const ids = await me.page.evaluate(() => [...window.mooyaho.remoteStreams.keys()].sort());
        return JSON.stringify(ids) === JSON.stringify([...others].sort());
      }, `${me.name}'s streams (${label})`, 20_000);
      const counts = await assertDecodingFrom(me.page, others, `${me.name} (${label})`, sfuFrames);
      for (const id of others) assert.ok(counts[id] > 5, `${me.name} decodes ${id} (${label})`);
    }
  };
  await expectAllSeeAll('3 joined');

  for (const me of clients) {
    assert.equal(await me.page.evaluate(() => window.mooyaho.peers.size), 0, `${me.name}: no mesh in an SFU channel`);
    const paths = await sfuPaths(me.page);
    for (const side of ['publisher', 'subscriber']) {
      const { remote, advertised } = paths[side];
      assert.ok(advertised.length > 0, `${me.name} ${side}: the node advertises candidates`);
      assert.ok(advertised.includes(remote), `${me.name} ${side}: media path ${remote} ends at the node (${advertised})`);
    }
    const events = await me.page.evaluate(() => window.events.map((e) => e.type));
    assert.ok(events.includes('sfuPeerConnected'), `${me.name}: publish PC connected`);
    assert.ok(!events.includes('error'), `${me.name}: no error`);
  }

  clients.push(await joinSfu(channel.id, 'Dee'));
  await expectAllSeeAll('late joiner');

  const leaver = clients.splice(0, 1)[0];
  await leaver.page.evaluate(() => window.mooyaho.leave());
  assert.deepEqual(await leaver.page.evaluate(() => [window.mooyaho.remoteStreams.size, window.mooyaho.sfuPeers]), [0, { publisher: null, subscriber: null }]);
  await expectAllSeeAll('after a leave');

  // A new publisher's tracks take the m-lines the leaver's ended tracks left (rejected, then
  // recycled under new mids): each subscribe SDP keeps 6 m-lines, or 7 when one of the leaver's
  // was the first (kept as the BUNDLE tag), instead of growing to 8.
  const mLines = (c) => c.page.evaluate(() => window.mooyaho.sfuPeers.subscriber.remoteDescription.sdp.match(/^m=/gm).length);
  for (const c of clients) {
    await waitFor(
      () => c.page.evaluate((id) => !window.mooyaho.sfuPeers.subscriber.remoteDescription.sdp.includes(`a=msid:${id} `), leaver.id),
      `${c.name}: re-offered without the leaver's tracks`,
      20_000,
    );
  }
  const before = await Promise.all(clients.map(mLines));
  clients.push(await joinSfu(channel.id, 'Eve'));
  await expectAllSeeAll('a new publisher recycles the ended m-lines');
  for (const [i, c] of clients.slice(0, 3).entries()) {
    const now = await mLines(c);
    assert.equal(before[i], 6, `${c.name}: m-lines after the leave`);
    assert.ok(now <= 7, `${c.name}: ${now} m-lines after a new publisher (no recycling would be 8)`);
    const events = await c.page.evaluate(() => window.events.filter((e) => e.type === 'error'));
    assert.deepEqual(events, [], `${c.name}: no error`);
  }
  for (const c of [...clients, leaver]) await c.page.close();
});

test('demo page in an SFU channel: three participants with video tiles, a viewer turns its camera on late', nodeMedia, async () => {
  const channel = await server.api.createChannel(true);
  const pages = [];
  for (const name of ['Ada', 'Bob', 'Cy']) {
    const page = await browser.context.newPage();
    await page.goto(`${server.url}/?channel=${channel.id}`);
    await page.fill('#name', name);
    await page.click('#join-form button[type=submit]');
    await page.waitForSelector('#room:not([hidden])');
    pages.push(page);
  }
  const playing = (page) => page.$$eval('#tiles .tile video', (videos) => videos.filter((v) => v.readyState >= 2 && v.videoWidth > 0).length);
  for (const page of pages) await waitFor(async () => (await playing(page)) === 3, 'three playing tiles', 20_000);
  assert.match(await pages[0].textContent('#room-name'), /^SFU channel/);
  await pages[0].waitForTimeout(1000);
  await pages[0].screenshot({ path: artifactPath('demo-sfu-3-participants.png') });

  // A subscribe-only viewer (no camera yet) receives everyone, then publishes when it turns the camera on.
  const viewer = await sdkPage(browser, server);
  const viewerId = await viewer.evaluate(async ({ url, channel }) => {
    window.mooyaho = new window.Mooyaho({ url });
    const id = await window.mooyaho.connect();
    await window.mooyaho.integrateUser({ id, name: 'Viewer' });
    await window.mooyaho.enter(channel);
    return id;
  }, { url: server.url, channel: channel.id });
  const ids = await Promise.all(pages.map((p) => p.evaluate(() => window.mooyaho.sessionId)));
  await assertDecodingFrom(viewer, ids, 'viewer', sfuFrames);
  await viewer.evaluate(() => window.mooyaho.createUserMedia({ audio: true, video: { width: 320, height: 240 } }));
  for (const page of pages) await waitFor(async () => (await playing(page)) === 4, 'the viewer\'s tile plays', 20_000);
  await assertDecodingFrom(pages[0], [viewerId], 'Ada sees the late publisher', sfuFrames);
  for (const page of [...pages, viewer]) await page.close();
});

test('no usable SFU node: sfu_unavailable is an error event, no mesh is built, the demo explains it', async () => {
  const nodes = await server.api.listSfuServers();
  assert.ok(nodes.length > 0, 'dev registers its embedded node');
  for (const node of nodes) await server.api.updateSfuServer(node.id, { disabled: true });
  try {
    const channel = await server.api.createChannel(true);
    const pages = [await joinSfu(channel.id, 'P1'), await joinSfu(channel.id, 'P2')];
    for (const { page } of pages) {
      assert.equal(await page.evaluate(() => window.mooyaho.sfuEnabled), true);
      await waitFor(() => page.evaluate(() => window.events.some((e) => e.type === 'error' && e.code === 'sfu_unavailable')), 'sfu_unavailable');
    }
    await sleep(1000); // a mesh offer would be made at once on `entered`
    for (const { page } of pages) {
      assert.equal(await page.evaluate(() => window.mooyaho.peers.size), 0, 'no mesh PeerConnection in an SFU channel');
      // The refused publish PeerConnection was closed, not left gathering.
      assert.equal(await page.evaluate(() => window.mooyaho.sfuPeers.publisher), null);
      await page.close();
    }
    const demo = await browser.context.newPage();
    await demo.goto(`${server.url}/?channel=${channel.id}`);
    await demo.click('#join-form button[type=submit]');
    await demo.waitForSelector('#banner:not([hidden])');
    assert.match(await demo.textContent('#banner'), /no SFU node serves it/);
    await demo.close();
  } finally {
    for (const node of nodes) await server.api.updateSfuServer(node.id, { disabled: false });
  }
});
