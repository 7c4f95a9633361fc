// Mesh: three demo pages in one channel decode each other, see chat and mute state, and drop
// the tile and stream of a member who leaves; the leaver can come back with nothing stale.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { artifactPath, assertDecodingFrom, joinDemo, launchBrowser, sleep, startServer, waitFor } from './helpers.mjs';

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

const join = (channelId, name) => joinDemo(browser, server, channelId, name);

const state = (page) => page.evaluate(() => ({
  peers: [...window.mooyaho.peers.keys()].sort(),
  streams: [...window.mooyaho.remoteStreams.keys()].sort(),
  sessions: [...window.mooyaho.sessions.keys()].sort(),
  tiles: [...document.querySelectorAll('#tiles .tile')].map((t) => t.dataset.session).sort(),
}));

test('three demo pages in a mesh channel decode each other; a leaver is dropped everywhere', async () => {
  const channel = await server.api.createChannel(false);
  assert.equal(channel.sfuEnabled, false);
  const ada = await join(channel.id, 'Ada');
  const bob = await join(channel.id, 'Bob');
  const cy = await join(channel.id, 'Cy');
  const all = [ada, bob, cy];

  for (const me of all) {
    const others = all.filter((p) => p !== me).map((p) => p.id);
    const counts = await assertDecodingFrom(me.page, others, me.name);
    for (const id of others) assert.ok(counts[id] > 5, `${me.name} decodes ${id}: ${counts[id]}`);
    const s = await state(me.page);
    assert.deepEqual(s.peers, others.sort(), `${me.name}: one PeerConnection per other member`);
    assert.deepEqual(s.tiles, all.map((p) => p.id).sort(), `${me.name}: a tile per participant`);
  }
  // Names on the tiles come from the integrated users.
  const labels = await ada.page.$$eval('#tiles .tile .name', (els) => els.map((e) => e.textContent).sort());
  assert.deepEqual(labels, ['Ada (you)', 'Bob', 'Cy']);

  // Chat reaches everyone, sender included.
  await bob.page.fill('#chat-input', 'hello from Bob');
  await bob.page.click('#chat-form button');
  for (const p of all) {
    await p.page.waitForFunction(() => document.querySelector('#messages').textContent.includes('hello from Bob'));
  }
  // Mute state shows on the others' tile of the muted member.
  await cy.page.click('#mute');
  await ada.page.waitForFunction((id) => document.querySelector(`[data-session="${id}"] .flags`)?.textContent.includes('muted'), cy.id);

  await sleep(300); // let video settle so the screenshot shows frames, not black tiles
  await ada.page.screenshot({ path: artifactPath('demo-mesh-3-participants.png') });

  // Cy leaves: the others drop its PeerConnection, stream and tile; Cy keeps nothing.
  await cy.page.click('#leave');
  for (const me of [ada, bob]) {
    const other = me === ada ? bob : ada;
    await waitFor(async () => {
      const s = await state(me.page);
      return !s.peers.includes(cy.id) && !s.streams.includes(cy.id) && !s.tiles.includes(cy.id) && !s.sessions.includes(cy.id);
    }, `${me.name} to drop Cy`);
    const s = await state(me.page);
    assert.deepEqual(s.peers, [other.id]);
    assert.deepEqual(s.streams, [other.id]);
  }
  await assertDecodingFrom(ada.page, [bob.id], 'Ada after Cy left');
  const left = await cy.page.evaluate(() => ({
    peers: window.mooyaho.peers.size, streams: window.mooyaho.remoteStreams.size, sessions: window.mooyaho.sessions.size,
  }));
  assert.deepEqual(left, { peers: 0, streams: 0, sessions: 0 });

  // Cy comes back (a fresh client on the same page): everyone decodes everyone again.
  await cy.page.click('#join-form button[type=submit]');
  await cy.page.waitForSelector('#room:not([hidden])');
  cy.id = await cy.page.evaluate(() => window.mooyaho.sessionId);
  for (const me of all) {
    await assertDecodingFrom(me.page, all.filter((p) => p !== me).map((p) => p.id), `${me.name} after rejoin`);
  }
  for (const p of all) await p.page.close();
});
