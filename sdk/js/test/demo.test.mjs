// The demo page itself: its static files are served by the binary, the direct-call page's
// accept/decline buttons work, and without anonymous mode the page says how to fix it.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { artifactPath, launchBrowser, startServer, waitFor } from './helpers.mjs';

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

test('the binary serves the SDK bundle and the demo without an API key', async () => {
  const sdk = await fetch(`${server.url}/sdk/mooyaho.js`);
  assert.equal(sdk.status, 200);
  assert.match(sdk.headers.get('content-type') ?? '', /^text\/javascript/);
  assert.match(await sdk.text(), /export\s*\{[^}]*Mooyaho/);
  for (const [path, type] of [['/', /^text\/html/], ['/demo/demo.js', /^text\/javascript/], ['/demo/demo.css', /^text\/css/], ['/demo/test.html', /^text\/html/]]) {
    const res = await fetch(server.url + path);
    assert.equal(res.status, 200, path);
    assert.match(res.headers.get('content-type') ?? '', type, path);
  }
  assert.equal((await fetch(`${server.url}/demo/nope.js`)).status, 404);
});

test('join form without a channel shows how to create one', async () => {
  const page = await browser.context.newPage();
  await page.goto(server.url);
  assert.ok(await page.isVisible('#join'));
  assert.match(await page.textContent('#curl'), new RegExp(`curl -s -X POST ${server.url}/channels`));
  await page.fill('#channel-id', 'no-such-channel');
  await page.click('#join-form button[type=submit]');
  await page.waitForSelector('#banner:not([hidden])');
  assert.match(await page.textContent('#banner'), /No such channel/);
  await page.close();
});

/** Opens the direct-call page and returns its session id once connected. */
async function callPage() {
  const page = await browser.context.newPage();
  await page.goto(`${server.url}/?call`);
  await page.waitForFunction(() => /^[0-9a-f-]{8,}/.test(document.querySelector('#my-id').textContent));
  return { page, id: await page.textContent('#my-id') };
}

const videoPlaying = (page, id) => page.evaluate((sid) => {
  const video = document.querySelector(`#call-tiles [data-session="${sid}"] video`);
  return Boolean(video && video.readyState >= 2 && video.videoWidth > 0);
}, id);

test('direct-call page: accept connects both, decline rejects the caller', async () => {
  const ada = await callPage();
  const bob = await callPage();
  await ada.page.fill('#callee', bob.id);
  await ada.page.click('#call-form button[type=submit]');
  await bob.page.waitForSelector('#incoming[open]');
  assert.equal(await bob.page.textContent('#caller'), ada.id);
  await bob.page.click('#accept');
  await waitFor(() => videoPlaying(ada.page, bob.id), 'Ada to play Bob');
  await waitFor(() => videoPlaying(bob.page, ada.id), 'Bob to play Ada');
  await waitFor(async () => /Talking with|Connected with/.test(await ada.page.textContent('#call-state')), 'Ada call state');
  const paused = await ada.page.evaluate((sid) => document.querySelector(`#call-tiles [data-session="${sid}"] video`).paused, bob.id);
  assert.equal(paused, false, 'the remote video plays');
  await ada.page.waitForTimeout(500);
  await ada.page.screenshot({ path: artifactPath('demo-direct-call.png') });
  await ada.page.click('#hangup');

  const cy = await callPage();
  await cy.page.fill('#callee', bob.id);
  await cy.page.click('#call-form button[type=submit]');
  await bob.page.waitForSelector('#incoming[open]');
  await bob.page.click('#decline');
  await cy.page.waitForSelector('#banner:not([hidden])');
  assert.match(await cy.page.textContent('#banner'), /declined/);
  assert.equal(await cy.page.evaluate(() => window.mooyaho.peers.size), 0);
  for (const p of [ada, bob, cy]) await p.page.close();
});

test('without --allow-anonymous the demo explains how to start the server', async () => {
  const strict = await startServer([], { anonymous: false });
  try {
    const channel = await strict.api.createChannel(false);
    const page = await browser.context.newPage();
    await page.goto(`${strict.url}/?channel=${channel.id}`);
    await page.click('#join-form button[type=submit]');
    await page.waitForSelector('#banner:not([hidden])');
    assert.match(await page.textContent('#banner'), /mooyaho dev --allow-anonymous/);
    assert.ok(await page.isHidden('#room'));
    await page.close();
  } finally {
    await strict.stop();
  }
});
