// WHIP (RFC 9725) from a browser: a Chromium page with no SDK (a raw RTCPeerConnection and
// fetch), served from another origin than the server (so CORS is exercised: the server runs with
// `--cors-origin` naming that origin), publishes its fake camera into an SFU channel with one POST
// and a join token; an SDK member of the channel decodes the video. DELETE ends it: the member
// hears the publisher leave. A page of an origin the server does not allow cannot publish.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, test } from 'node:test';
import { createJoinToken } from '../dist/server.js';
import { assertDecodingFrom, connectClient, launchBrowser, sdkPage, sfuFrames, startServer, waitFor } from './helpers.mjs';

/** A blank page on its own origin (the WHIP client's site), on a free loopback port. */
async function startSite() {
  const site = createServer((_, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>whip client</title>');
  });
  await new Promise((r) => site.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${site.address().port}`, close: () => new Promise((r) => site.close(r)) };
}

let site;
let stranger;
let server;
let browser;
before(async () => {
  site = await startSite();
  stranger = await startSite();
  server = await startServer(['--cors-origin', site.url]);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
  await site?.close();
  await stranger?.close();
});

/**
 * In `page`, publishes the fake camera and microphone with WHIP to `endpoint` (absolute URL):
 * sendonly transceivers, the offer POSTed as `application/sdp` with the token, the answer applied.
 * Resolves `{status, location, etag, error}`; the PeerConnection stays in `window.whipPc`.
 */
function whipPublish(page, endpoint, token) {
  return page.evaluate(async ({ endpoint, token }) => {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 320, height: 240 } });
    const pc = new RTCPeerConnection();
    window.whipPc = pc;
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
    await pc.setLocalDescription(await pc.createOffer());
    let response;
    try {
      response = await fetch(endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/sdp', authorization: `Bearer ${token}` },
        body: pc.localDescription.sdp,
      });
    } catch (e) {
      return { status: 0, error: String(e) };
    }
    if (response.status !== 201) return { status: response.status, error: await response.text() };
    const location = new URL(response.headers.get('location'), endpoint).href;
    const etag = response.headers.get('etag');
    await pc.setRemoteDescription({ type: 'answer', sdp: await response.text() });
    return { status: 201, location, etag };
  }, { endpoint, token });
}

test('a raw Chromium WHIP client on another origin publishes video that an SDK member decodes', async () => {
  const channel = await server.api.createChannel(true);
  const member = await sdkPage(browser, server);
  await connectClient(member, server, { name: 'member' });
  await member.evaluate((c) => window.mooyaho.enter(c), channel.id);

  const token = createJoinToken(server.apiKey, { userId: 'camera-1', name: 'Camera 1', channel: channel.id, subscribe: false });
  const publisher = await browser.context.newPage();
  await publisher.goto(site.url);
  const whip = await whipPublish(publisher, `${server.url}/whip/${channel.id}`, token);
  assert.equal(whip.status, 201, whip.error);
  assert.match(whip.etag ?? '', /^".+"$/);
  await waitFor(() => publisher.evaluate(() => window.whipPc.connectionState === 'connected'), 'WHIP PeerConnection connected');

  const detail = await server.api.getChannel(channel.id);
  const whipSession = detail.channelSessions.find((s) => s.user.id === 'camera-1')?.sessionId;
  assert.ok(whipSession, JSON.stringify(detail));
  await assertDecodingFrom(member, [whipSession], 'SDK member ← WHIP', sfuFrames);

  // DELETE from the page (a CORS request too) ends it; the member hears the publisher leave.
  const deleted = await publisher.evaluate(async (location) => (await fetch(location, { method: 'DELETE' })).status, whip.location);
  assert.equal(deleted, 200);
  await waitFor(() => member.evaluate((s) => window.events.some((e) => e.type === 'left' && e.sessionId === s), whipSession), 'member told the WHIP publisher left');
  await publisher.close();
  await member.close();
});

test('a page of an origin the server does not allow cannot publish with WHIP', async () => {
  const channel = await server.api.createChannel(true);
  const token = createJoinToken(server.apiKey, { userId: 'intruder', channel: channel.id });
  const page = await browser.context.newPage();
  await page.goto(stranger.url);
  const whip = await whipPublish(page, `${server.url}/whip/${channel.id}`, token);
  // The preflight is not allowed: the browser refuses the request before any offer is sent.
  assert.equal(whip.status, 0, JSON.stringify(whip));
  const detail = await server.api.getChannel(channel.id);
  assert.deepEqual(detail.channelSessions, []);
  await page.close();
});
