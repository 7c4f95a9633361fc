// WHIP (RFC 9725) and WHEP from a browser: a Chromium page with no SDK (a raw RTCPeerConnection
// and fetch), served from another origin than the server (so CORS is exercised: the server runs
// with `--cors-origin` naming that origin), publishes its fake camera into an SFU channel with one
// POST and a join token; an SDK member of the channel and a raw WHEP viewer page decode the video.
// DELETE ends each: the member hears the publisher leave. A page of an origin the server does not
// allow cannot publish.
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

/** framesDecoded of the page's WHEP PeerConnection (`window.whepPc`). */
const whepFrames = (page) => page.evaluate(async () => {
  let n = 0;
  (await window.whepPc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded ?? 0; });
  return { whip: n };
});

test('a raw Chromium WHEP viewer decodes a Chromium WHIP publisher', async () => {
  const channel = await server.api.createChannel(true);
  const publisher = await browser.context.newPage();
  await publisher.goto(site.url);
  const publishToken = createJoinToken(server.apiKey, { userId: 'camera-2', channel: channel.id, subscribe: false });
  const whip = await whipPublish(publisher, `${server.url}/whip/${channel.id}`, publishToken);
  assert.equal(whip.status, 201, whip.error);
  await waitFor(() => publisher.evaluate(() => window.whipPc.connectionState === 'connected'), 'WHIP connected');
  const { channelSessions } = await server.api.getChannel(channel.id);
  const whipSession = channelSessions.find((s) => s.user.id === 'camera-2').sessionId;

  const viewer = await browser.context.newPage();
  await viewer.goto(site.url);
  const viewToken = createJoinToken(server.apiKey, { userId: 'player', channel: channel.id, publish: false });
  const whep = await viewer.evaluate(async ({ endpoint, token }) => {
    const pc = new RTCPeerConnection();
    window.whepPc = pc;
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
    window.streams = [];
    pc.ontrack = (e) => window.streams.push(e.streams[0]?.id);
    await pc.setLocalDescription(await pc.createOffer());
    const response = await fetch(endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/sdp', authorization: `Bearer ${token}` },
      body: pc.localDescription.sdp,
    });
    if (response.status !== 201) return { status: response.status, error: await response.text() };
    await pc.setRemoteDescription({ type: 'answer', sdp: await response.text() });
    return { status: 201, location: new URL(response.headers.get('location'), endpoint).href };
  }, { endpoint: `${server.url}/whep/${channel.id}?publisher=${whipSession}`, token: viewToken });
  assert.equal(whep.status, 201, whep.error);
  await assertDecodingFrom(viewer, ['whip'], 'WHEP viewer ← WHIP', whepFrames);
  // The tracks carry the publisher's session id as their stream id, as for SDK members.
  assert.ok((await viewer.evaluate(() => window.streams)).every((id) => id === whipSession));

  const status = await viewer.evaluate(async (location) => (await fetch(location, { method: 'DELETE' })).status, whep.location);
  assert.equal(status, 200);
  await waitFor(async () => !(await server.api.getChannel(channel.id)).channelSessions.some((s) => s.user.id === 'player'), 'viewer left');
  await viewer.close();
  await publisher.close();
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
