// SFU channels without an SFU node (the media plane does not exist yet): entering succeeds with
// sfuEnabled, the publish attempt surfaces the server's `sfu_unavailable` as an `error` event,
// and — unlike the original (bug 7) — no mesh PeerConnection is built between the members.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { connectClient, launchBrowser, sdkPage, sleep, startServer, waitFor } from './helpers.mjs';

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

test('SFU channel: no mesh, sfu_unavailable reported as an error event', async () => {
  const channel = await server.api.createChannel(true);
  assert.equal(channel.sfuEnabled, true);
  const pages = [await sdkPage(browser, server), await sdkPage(browser, server)];
  for (const [i, page] of pages.entries()) {
    await connectClient(page, server, { name: `P${i}` });
    await page.evaluate((c) => window.mooyaho.enter(c), channel.id);
    assert.equal(await page.evaluate(() => window.mooyaho.sfuEnabled), true);
  }
  for (const page of pages) {
    await waitFor(() => page.evaluate(() => window.events.some((e) => e.type === 'error' && e.code === 'sfu_unavailable')), 'sfu_unavailable');
    const entered = await page.evaluate(() => window.events.find((e) => e.type === 'enterSuccess'));
    assert.ok(entered);
  }
  await sleep(1000); // a mesh offer would be made immediately on `entered`
  for (const page of pages) {
    assert.equal(await page.evaluate(() => window.mooyaho.peers.size), 0, 'no mesh PeerConnection in an SFU channel');
    assert.equal(await page.evaluate(() => window.mooyaho.sessions.size), 2);
    // The refused publish PeerConnection was closed, not left gathering.
    assert.equal(await page.evaluate(() => window.mooyaho.sfuPeers.publisher), null);
  }
  // Leaving releases the (failed) publish PeerConnection too.
  await pages[0].evaluate(() => window.mooyaho.leave());
  assert.deepEqual(await pages[0].evaluate(() => window.mooyaho.sfuPeers), { publisher: null, subscriber: null });
  for (const page of pages) await page.close();
});

test('the demo page explains sfu_unavailable', async () => {
  const channel = await server.api.createChannel(true);
  const page = await browser.context.newPage();
  await page.goto(`${server.url}/?channel=${channel.id}`);
  await page.click('#join-form button[type=submit]');
  await page.waitForSelector('#banner:not([hidden])');
  assert.match(await page.textContent('#banner'), /no SFU node serves it yet/);
  await page.close();
});
