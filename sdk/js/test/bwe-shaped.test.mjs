// Downlink bandwidth estimation with real browsers: `mooyaho dev`, a Chromium 720p simulcast
// publisher (q/h/f, the SDK's default) and two Chromium viewers. One viewer's Chromium runs in a
// network namespace the test makes, and what this host sends into it is shaped with `tc` (a
// token bucket with a 200 ms drop-tail queue) to midway between the lowest and the middle
// layer's measured rates; nothing tells the node. From that viewer's transport-wide CC feedback
// alone the node moves it to a lower layer (a smaller decoded frameWidth) with < 1 % of its
// packets dropped at the bottleneck once converged, while the unshaped viewer keeps decoding
// the top layer.
//
// Why between q and h: the fake camera's layers are cheaper than a real one's, so a fixed rate
// would prove nothing, and on a loaded machine Chromium's encoder moves its upper layers' rates
// by a factor of two within seconds (f measured 0.45–0.95 Mbit/s in one run): a link between h
// and f is crossed by the layers themselves, which no estimator can follow without loss.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createNamespace, inboundVideo, joinSfu, launchBrowser, shapeDownlink, sleep, startServer, waitFor } from './helpers.mjs';

/** Where the shaped downlink lies between the lowest layer's rate (0) and the middle one's (1). */
const SHAPED_BETWEEN = 0.5;

let namespace;
let shaping;
let server;
let browser;
let shapedBrowser;
before(async () => {
  assert.equal(process.getuid(), 0, 'this test makes a network namespace and shapes it: run it as root');
  namespace = createNamespace('bwe');
  // The node listens on this host and announces the veth address the namespace reaches it at
  // (this host's own pages reach it there too, over loopback: unshaped).
  server = await startServer(['--announce-ip', namespace.peer], { listen: '0.0.0.0:0', host: namespace.peer });
  // Plain http to a non-loopback address: trust the origin so the publisher gets its camera.
  const trusted = `--unsafely-treat-insecure-origin-as-secure=${server.url}`;
  browser = await launchBrowser([trusted]);
  shapedBrowser = await launchBrowser([trusted], { netns: namespace.name });
});
after(async () => {
  await shapedBrowser?.close();
  await browser?.close();
  await server?.stop();
  shaping?.remove();
  namespace?.remove();
});

/** The publisher's sent video layers by rid: frame width and bytes sent so far. */
const sentLayers = (publisher) => publisher.page.evaluate(async () => {
  const sender = window.mooyaho.sfuPeers.publisher?.getSenders().find((s) => s.track?.kind === 'video');
  const out = {};
  if (!sender) return out;
  (await sender.getStats()).forEach((r) => {
    if (r.type === 'outbound-rtp' && r.kind === 'video' && r.rid) out[r.rid] = { width: r.frameWidth ?? 0, bytes: r.bytesSent ?? 0 };
  });
  return out;
});
const topWidth = (layers) => layers.f?.width ?? 0;

test('a viewer behind a shaped downlink gets a lower layer without loss; an unshaped one keeps the top', async () => {
  const channel = await server.api.createChannel(true);
  const publisher = await joinSfu(browser, server, channel.id, [1280, 720]);
  const free = await joinSfu(browser, server, channel.id, null);
  // Layers above the lowest flow only while someone watches them (dynacast): the unshaped
  // viewer watches the middle layer while the lower two are measured, then the top again.
  const watch = (video) => free.page.evaluate(({ publisher, video }) => window.mooyaho.setSubscription(publisher, { video }), { publisher: publisher.id, video });
  const decoding = (rid) => waitFor(async () => {
    const width = (await sentLayers(publisher))[rid]?.width ?? 0;
    return width > 0 && (await inboundVideo(free, publisher.id)).width === width ? true : null;
  }, `the unshaped viewer decoding layer ${rid}`, 60_000);
  await watch('medium');
  await decoding('h');
  await sleep(3000);
  const [first, firstAt] = [await sentLayers(publisher), Date.now()];
  await sleep(4000);
  const [second, secondAt] = [await sentLayers(publisher), Date.now()];
  const rates = Object.fromEntries(['q', 'h'].map((rid) => [rid, Math.round(((second[rid].bytes - (first[rid]?.bytes ?? 0)) * 8) / ((secondAt - firstAt) / 1000))]));
  const kbit = Math.max(100, Math.round((rates.q + SHAPED_BETWEEN * (rates.h - rates.q)) / 1000));
  console.log(`layer rates (bit/s) ${JSON.stringify(rates)}: the shaped downlink gets ${kbit} kbit/s`);
  assert.ok(rates.h > 1.5 * rates.q, `the middle layer costs clearly more than the lowest: ${JSON.stringify(rates)}`);
  await watch('high');
  await decoding('f');
  shaping = shapeDownlink(namespace, { kbit, queueMs: 200 });
  const shaped = await joinSfu(shapedBrowser, server, channel.id, null);

  // Convergence: the unshaped viewer decodes the top layer's width (whatever Chromium's CPU
  // adaptation makes it), the shaped one a smaller width, for five seconds in a row.
  let streak = 0;
  const started = Date.now();
  const trace = [];
  const converged = await waitFor(async () => {
    await sleep(1000);
    const [layers, f, s] = [await sentLayers(publisher), await inboundVideo(free, publisher.id), await inboundVideo(shaped, publisher.id)];
    const top = topWidth(layers);
    trace.push(`${Math.round((Date.now() - started) / 1000)}s ${s.width}/${f.width}/${top} lost ${s.lost} drops ${shaping.counts().dropped}`);
    const ok = top > 0 && f.width === top && s.width > 0 && s.width < top;
    streak = ok ? streak + 1 : 0;
    return streak >= 5 ? { top, free: f.width, shaped: s.width } : null;
  }, 'the shaped viewer on a lower layer while the unshaped one decodes the top', 120_000).finally(() => console.log(`shaped/free/top widths: ${trace.join(', ')}`));
  const convergedAfter = Date.now() - started;

  // Ten more seconds: < 1 % dropped at the bottleneck, the shaped viewer keeps decoding a lower
  // layer, the unshaped one the top.
  const before = { link: shaping.counts(), shaped: await inboundVideo(shaped, publisher.id), free: await inboundVideo(free, publisher.id) };
  const widths = [];
  for (let i = 0; i < 10; i += 1) {
    await sleep(1000);
    const [layers, f, s] = [await sentLayers(publisher), await inboundVideo(free, publisher.id), await inboundVideo(shaped, publisher.id)];
    widths.push({ top: topWidth(layers), free: f.width, shaped: s.width });
  }
  const link = shaping.counts();
  const shapedAfter = await inboundVideo(shaped, publisher.id);
  const freeAfter = await inboundVideo(free, publisher.id);
  const dropped = link.dropped - before.link.dropped;
  const offered = link.sent - before.link.sent + dropped;
  const loss = dropped / Math.max(offered, 1);
  const reportedLost = shapedAfter.lost - before.shaped.lost;
  const received = shapedAfter.packets - before.shaped.packets;
  console.log(`converged after ${convergedAfter} ms at widths ${JSON.stringify(converged)}; then 10 s: bottleneck dropped ${dropped} of ${offered} packets (${(100 * loss).toFixed(2)} %), shaped viewer received ${received} video packets (${reportedLost} reported lost) and decoded ${shapedAfter.frames - before.shaped.frames} frames, free viewer ${freeAfter.frames - before.free.frames}; widths ${JSON.stringify(widths)}`);
  assert.ok(loss < 0.01, `loss at the bottleneck after convergence: ${(100 * loss).toFixed(2)} %`);
  assert.ok(widths.every((w) => w.shaped > 0 && w.shaped < w.top), `shaped viewer widths: ${JSON.stringify(widths)}`);
  assert.ok(widths.filter((w) => w.free === w.top).length >= 8, `unshaped viewer widths: ${JSON.stringify(widths)}`);
  assert.ok(shapedAfter.frames - before.shaped.frames > 50, 'the shaped viewer keeps decoding');
  for (const viewer of [publisher, free, shaped]) {
    assert.deepEqual(await viewer.page.evaluate(() => window.errors), []);
  }
});
