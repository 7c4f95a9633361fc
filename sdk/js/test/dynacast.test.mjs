// Dynacast and adaptive stream through the real media plane (`mooyaho dev`) with headless
// Chromium: a 720p publisher sends three layers; when every viewer watches a thumbnail (`low`)
// the node tells it (`subscribedQualities`) and the SDK stops encoding the h and f layers
// (their outbound-rtp `framesEncoded` stands still); a viewer asking for `high` brings back the
// top layer its downlink estimate allows (f, or h on a loaded machine) and decodes it within
// seconds, while the other upper layer stays off. Adaptive stream: a small element gets the low
// layer, a hidden one none, a large one the top. A room spanning two workers counts the remote
// worker's viewers through its pipe.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { inboundVideo, joinSfu, launchBrowser, sleep, startServer, waitFor } from './helpers.mjs';

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

/** A page with a connected client in `channelId` (see `joinSfu`); with `camera`, it publishes that resolution. */
const join = (channelId, camera) => joinSfu(browser, server, channelId, camera);

/** The publisher's video encodings by rid: whether active, and frames encoded so far. */
const outbound = (publisher) => publisher.page.evaluate(async () => {
  const pc = window.mooyaho.sfuPeers.publisher;
  const out = {};
  if (!pc) return out;
  const sender = pc.getSenders().find((s) => s.track?.kind === 'video');
  for (const e of sender.getParameters().encodings) out[e.rid] = { active: e.active !== false, frames: 0 };
  (await sender.getStats()).forEach((r) => {
    if (r.type === 'outbound-rtp' && r.kind === 'video' && out[r.rid]) out[r.rid].frames = r.framesEncoded ?? 0;
  });
  return out;
});

const inbound = inboundVideo;

const wish = (viewer, publisher, video) =>
  viewer.page.evaluate(({ publisher, video }) => window.mooyaho.setSubscription(publisher, { video }), { publisher, video });

test('viewers all on thumbnails stop the 720p encoding; one asking high brings it back within seconds', async () => {
  const channel = await server.api.createChannel(true);
  const publisher = await join(channel.id, [1280, 720]);
  const a = await join(channel.id, null);
  const b = await join(channel.id, null);
  // Everyone watches at first: the top layer is decoded.
  await waitFor(async () => {
    const now = await inbound(a, publisher.id);
    if (process.env.DEBUG_DYNACAST) console.log(JSON.stringify({ a: now, pub: await outbound(publisher), q: await publisher.page.evaluate(() => window.qualities) }));
    return now.width >= 640 ? true : null;
  }, 'A decoding the top layer', 60_000);
  await wish(a, publisher.id, 'low');
  await wish(b, publisher.id, 'low');

  // The node tells the publisher only q is consumed; the SDK deactivates h and f.
  await waitFor(async () => {
    const now = await outbound(publisher);
    return now.q?.active && now.h && !now.h.active && now.f && !now.f.active ? now : null;
  }, 'h and f inactive at the publisher', 10_000);
  // A frame already in the encoder when the encodings went inactive may still be counted.
  await sleep(500);
  const stopped = await outbound(publisher);
  await sleep(2000);
  const later = await outbound(publisher);
  console.log(`thumbnails only: ${JSON.stringify(stopped)} → ${JSON.stringify(later)}`);
  assert.equal(later.f.frames, stopped.f.frames, 'no 720p frames encoded');
  assert.equal(later.h.frames, stopped.h.frames, 'no 360p frames encoded');
  assert.ok(later.q.frames > stopped.q.frames + 10, 'the thumbnail layer keeps encoding');
  const low = await inbound(b, publisher.id);
  assert.ok(low.width > 0 && low.width <= 400, `B decodes the low layer (${low.width})`);

  // A asks for high: f is encoded again and A decodes the large size within a few seconds.
  const asked = Date.now();
  await wish(a, publisher.id, 'high');
  const big = await waitFor(async () => {
    const now = await inbound(a, publisher.id);
    return now.width >= 640 ? now : null;
  }, 'A decoding the top layer again', 15_000);
  const tookMs = Date.now() - asked;
  console.log(`A back at width ${big.width} after ${tookMs} ms`);
  // A's layer is the highest its downlink estimate allows (f, or h on a loaded machine): that
  // one encodes again, and the other upper layer, which nobody consumes, stays off.
  const [mine, other] = big.width >= 1000 ? ['f', 'h'] : ['h', 'f'];
  const back = await waitFor(async () => {
    const now = await outbound(publisher);
    return now[mine].active && !now[other].active ? now : null;
  }, `only ${mine} of the upper layers active`, 5_000);
  await sleep(1000);
  const after = await outbound(publisher);
  assert.ok(after[mine].frames > back[mine].frames, `${mine} encodes again`);
  assert.equal(after[other].frames, back[other].frames, `nobody consumes ${other}`);
  const framesAt = (await inbound(a, publisher.id)).frames;
  await sleep(1000);
  assert.ok((await inbound(a, publisher.id)).frames > framesAt + 5, 'A keeps decoding');
  assert.ok((await publisher.page.evaluate(() => window.qualities)).length >= 2);
  for (const page of [publisher.page, a.page, b.page]) {
    assert.deepEqual(await page.evaluate(() => window.errors), []);
  }
  for (const page of [publisher.page, a.page, b.page]) await page.close();
});

test('adaptive stream: a small element gets the low layer, a hidden one none, a large one the top', async () => {
  const channel = await server.api.createChannel(true);
  const publisher = await join(channel.id, [1280, 720]);
  const viewer = await join(channel.id, null);
  await waitFor(async () => ((await inbound(viewer, publisher.id)).frames > 0 ? true : null), 'the viewer decoding', 60_000);
  // The application renders the publisher's video in a 160×90 element and lets the SDK follow it.
  await viewer.page.evaluate((publisher) => {
    const video = document.createElement('video');
    video.id = 'remote';
    video.muted = true;
    video.autoplay = true;
    video.style.cssText = 'position:absolute;left:0;top:0;width:160px;height:90px';
    video.srcObject = window.mooyaho.remoteStreams.get(publisher);
    document.body.appendChild(video);
    window.stopObserving = window.mooyaho.observeVideo(publisher, video);
  }, publisher.id);
  const small = await waitFor(async () => {
    const now = await inbound(viewer, publisher.id);
    return now.width > 0 && now.width <= 400 ? now : null;
  }, 'a thumbnail element getting the low layer', 15_000);
  console.log(`160×90 element: decoded width ${small.width}`);
  // Hidden (zero size): no video packets.
  await viewer.page.evaluate(() => { document.getElementById('remote').style.width = '0px'; });
  await sleep(2500);
  const hidden = await inbound(viewer, publisher.id);
  await sleep(2000);
  assert.equal((await inbound(viewer, publisher.id)).packets, hidden.packets, 'a zero-size element gets no video');
  // Large: the top layer.
  await viewer.page.evaluate(() => {
    const video = document.getElementById('remote');
    video.style.width = '1280px';
    video.style.height = '720px';
  });
  const large = await waitFor(async () => {
    const now = await inbound(viewer, publisher.id);
    return now.width >= 640 ? now : null;
  }, 'a large element getting the top layer', 20_000);
  console.log(`1280×720 element: decoded width ${large.width}`);
  await viewer.page.evaluate(() => window.stopObserving());
  assert.deepEqual(await viewer.page.evaluate(() => window.errors), []);
});

/** The node port `pc` (`publisher` or `subscriber`) sends to: which worker serves it. */
const nodePort = (client, side) => client.page.evaluate(async (side) => {
  const pc = window.mooyaho.sfuPeers[side];
  let port = 0;
  const stats = await pc.getStats();
  stats.forEach((r) => {
    if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') port = stats.get(r.remoteCandidateId)?.port ?? 0;
  });
  return port;
}, side);

test('a room spanning two workers: the remote worker\'s viewers count, and one there asking high gets a larger layer', async () => {
  const spanning = await startServer(['--workers', '2', '--spill-after', '1']);
  const previous = server;
  server = spanning;
  try {
    const channel = await server.api.createChannel(true);
    const publisher = await join(channel.id, [1280, 720]);
    const a = await join(channel.id, null);
    await waitFor(async () => ((await inbound(a, publisher.id)).frames > 0 ? true : null), 'A decoding', 60_000);
    const b = await join(channel.id, null);
    await waitFor(async () => ((await inbound(b, publisher.id)).frames > 0 ? true : null), 'B decoding', 60_000);
    const ports = { publisher: await nodePort(publisher, 'publisher'), a: await nodePort(a, 'subscriber'), b: await nodePort(b, 'subscriber') };
    console.log(`node ports: ${JSON.stringify(ports)}`);
    assert.equal(ports.a, ports.publisher, 'A on the home worker');
    assert.notEqual(ports.b, ports.publisher, 'B on the other worker (the room spans it through a pipe)');

    await wish(a, publisher.id, 'low');
    await wish(b, publisher.id, 'low');
    await waitFor(async () => {
      const now = await outbound(publisher);
      return now.q?.active && now.h && !now.h.active && now.f && !now.f.active ? now : null;
    }, 'h and f inactive with every viewer on low, on both workers', 10_000);
    await sleep(500);
    const stopped = await outbound(publisher);
    await sleep(1500);
    const later = await outbound(publisher);
    assert.equal(later.f.frames, stopped.f.frames, 'no 720p frames encoded');
    const low = await inbound(b, publisher.id);
    assert.ok(low.width > 0 && low.width <= 400, `B gets the low layer through the pipe (${low.width})`);

    // B, on the other worker, asks for high: the pipe carries the top layer its estimate allows.
    await wish(b, publisher.id, 'high');
    const big = await waitFor(async () => {
      const now = await inbound(b, publisher.id);
      return now.width >= 640 ? now : null;
    }, 'B decoding a larger layer again', 15_000);
    console.log(`B (other worker) back at width ${big.width}`);
    const back = await outbound(publisher);
    assert.ok(back.f.active || back.h.active, 'an upper layer encodes again');
    const aNow = await inbound(a, publisher.id);
    assert.ok(aNow.width <= 400, 'A stays on the low layer');
    for (const page of [publisher.page, a.page, b.page]) {
      assert.deepEqual(await page.evaluate(() => window.errors), []);
    }
    for (const page of [publisher.page, a.page, b.page]) await page.close();
  } finally {
    server = previous;
    await spanning.stop();
  }
});
