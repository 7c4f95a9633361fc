// Firefox beside Chromium, and `mooyaho dev` beyond loopback. The server runs in a network
// namespace the test makes (its own address, reached over a veth pair, as another machine would
// be), started with `--listen 0.0.0.0:0`: its embedded SFU binds every address there and
// announces the namespace's one, not 127.0.0.1. A stock Debian Firefox ESR (fake devices, ICE
// prefs at their defaults, driven over WebDriver BiDi) and headless Chromium then meet in an SFU
// channel, a mesh channel and a direct call, and each decodes the other's video. Firefox never
// pairs with a remote loopback candidate, so the SFU case fails if dev announces loopback.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { firefoxBinary, launchFirefox } from './firefox.mjs';
import { assertDecodingFrom, connectClient, connectInPage, createNamespace, frames, launchBrowser, sdkPage, sfuFrames, sfuSelectedRemotes, startServer, waitFor } from './helpers.mjs';

let namespace;
let server;
let chromium;
let firefox;
before(async () => {
  assert.ok(existsSync(firefoxBinary), `${firefoxBinary} is missing (scripts/test.sh installs firefox-esr)`);
  assert.equal(process.getuid(), 0, 'this test makes a network namespace: run it as root');
  namespace = createNamespace('ff');
  server = await startServer([], { netns: namespace.name, host: namespace.address });
  // Cameras need a secure context: over plain http to another host, as here, a user would put
  // TLS in front (or tell the browser to trust the origin, as the tests do).
  chromium = await launchBrowser([`--unsafely-treat-insecure-origin-as-secure=${server.url}`]);
  firefox = await launchFirefox({ insecureOrigins: true });
});
after(async () => {
  await firefox?.close();
  await chromium?.close();
  await server?.stop();
  namespace?.remove();
});

/** Firefox's tab on the SDK test page, connected (a fresh `Mooyaho`, so each test starts clean). */
async function firefoxClient(options = {}) {
  await firefox.goto(`${server.url}/demo/test.html`);
  await waitFor(() => firefox.evaluate(() => window.sdkReady === true), 'the SDK in Firefox');
  return firefox.evaluate(connectInPage, { url: server.url, ...options });
}

/**
 * Frames Firefox has rendered per remote session. Its getStats() `framesDecoded` is not
 * reliable for remote streams, so every remote stream plays in a <video> whose
 * requestVideoFrameCallback counts frames.
 */
const firefoxFrames = (ff) => ff.evaluate(() => {
  window.rendered ??= {};
  window.players ??= {};
  for (const [id, stream] of window.mooyaho.remoteStreams) {
    let video = window.players[id];
    if (!video) {
      video = Object.assign(document.createElement('video'), { muted: true, autoplay: true, playsInline: true });
      document.body.append(video);
      window.players[id] = video;
      window.rendered[id] = 0;
      const count = () => { window.rendered[id] += 1; video.requestVideoFrameCallback(count); };
      video.requestVideoFrameCallback(count);
    }
    if (video.srcObject !== stream) {
      video.srcObject = stream;
      video.play().catch(() => {});
    }
  }
  return window.rendered;
});

test('Firefox and Chromium in an SFU channel on `dev` listening beyond loopback: each decodes the other', async () => {
  const channel = await server.api.createChannel(true);
  const page = await sdkPage(chromium, server);
  const chromiumId = await connectClient(page, server, { name: 'chromium' });
  const firefoxId = await firefoxClient({ name: 'firefox' });
  await page.evaluate((c) => window.mooyaho.enter(c), channel.id);
  await firefox.evaluate((c) => window.mooyaho.enter(c), channel.id);

  await assertDecodingFrom(page, [firefoxId], 'chromium (sfu)', sfuFrames);
  await assertDecodingFrom(firefox, [chromiumId], 'firefox (sfu)', firefoxFrames);
  // The media went to the namespace's address the node announced, not to loopback.
  const remotes = (await sfuSelectedRemotes(page)).map((r) => r.address);
  assert.ok(remotes.length >= 1 && remotes.every((a) => a === namespace.address), `selected SFU addresses ${remotes}`);
  await page.close();
});

test('Firefox and Chromium in a mesh channel: each decodes the other', async () => {
  const channel = await server.api.createChannel(false);
  const page = await sdkPage(chromium, server);
  const chromiumId = await connectClient(page, server, { name: 'chromium' });
  const firefoxId = await firefoxClient({ name: 'firefox' });
  await page.evaluate((c) => window.mooyaho.enter(c), channel.id);
  await firefox.evaluate((c) => window.mooyaho.enter(c), channel.id);

  await assertDecodingFrom(page, [firefoxId], 'chromium (mesh)', frames);
  await assertDecodingFrom(firefox, [chromiumId], 'firefox (mesh)', firefoxFrames);
  await page.close();
});

test('Firefox calls Chromium directly: both decode video', async () => {
  const page = await sdkPage(chromium, server);
  const chromiumId = await connectClient(page, server, { allowDirectCall: true });
  const firefoxId = await firefoxClient({ allowDirectCall: true });
  await page.evaluate(() => window.mooyaho.addEventListener('incomingCall', (call) => call.accept()));
  const outcome = await firefox.evaluate((to) => window.mooyaho.directCall(to).then(() => 'answered', (e) => `rejected:${e.code}`), chromiumId);
  assert.equal(outcome, 'answered');

  await assertDecodingFrom(page, [firefoxId], 'chromium (call)', frames);
  await assertDecodingFrom(firefox, [chromiumId], 'firefox (call)', firefoxFrames);
  await page.close();
});
