// Simulcast through the real media plane (`mooyaho dev`): a Chromium publisher sends its 720p
// fake camera as three layers (the SDK's default in SFU channels), and each viewer gets the
// layer it asks for with `setSubscription`: `high` decodes at least twice the width of `low`,
// `off` stops the viewer's video packets and `high` brings them back. Bad wishes are refused
// with the server's error.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { inboundVideo, joinSfu, launchBrowser, sdkPage, sfuFrames, sleep, startServer, waitFor } from './helpers.mjs';

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

const join = (channelId, camera) => joinSfu(browser, server, channelId, camera);
const inbound = inboundVideo;

const wish = (viewer, publisher, video) =>
  viewer.page.evaluate(({ publisher, video }) => window.mooyaho.setSubscription(publisher, { video }), { publisher, video });

test('a 720p simulcast publisher: viewers get the layer they ask for; off stops and high resumes video', async () => {
  const channel = await server.api.createChannel(true);
  const publisher = await join(channel.id, [1280, 720]);
  const encodings = await publisher.page.evaluate(async () => {
    await new Promise((r) => setTimeout(r, 500));
    const pc = window.mooyaho.sfuPeers.publisher;
    const sender = pc.getSenders().find((s) => s.track?.kind === 'video');
    return sender.getParameters().encodings.map((e) => [e.rid, e.scaleResolutionDownBy]);
  });
  assert.deepEqual(encodings, [['q', 4], ['h', 2], ['f', 1]], 'three layers by default');
  const a = await join(channel.id, null);
  const b = await join(channel.id, null);
  await wish(a, publisher.id, 'high');
  await wish(b, publisher.id, 'low');

  // Chromium ramps its layers up with its bandwidth estimate; give it time.
  const widths = await waitFor(async () => {
    const [wa, wb] = [await inbound(a, publisher.id), await inbound(b, publisher.id)];
    return wb.width > 0 && wa.width >= 2 * wb.width && wa.width >= 640 ? { a: wa.width, b: wb.width } : null;
  }, 'viewer A (high) at ≥ 2× the width of viewer B (low)', 60_000);
  console.log(`decoded widths: high ${widths.a}, low ${widths.b}`);
  assert.ok(widths.b <= widths.a / 2);

  // Off: nothing more reaches B once what was in flight has landed.
  await wish(b, publisher.id, 'off');
  await sleep(1500);
  const paused = await inbound(b, publisher.id);
  await sleep(3000);
  const still = await inbound(b, publisher.id);
  assert.equal(still.packets, paused.packets, 'no video packets while off');
  const aStill = await inbound(a, publisher.id);
  assert.ok(aStill.width >= 640, 'A keeps its high layer');

  // High again: B decodes again, at the high layer's width.
  await wish(b, publisher.id, 'high');
  const resumed = await waitFor(async () => {
    const now = await inbound(b, publisher.id);
    return now.frames > still.frames + 10 && now.width >= 2 * widths.b ? now : null;
  }, 'viewer B decoding the high layer again', 20_000);
  console.log(`B resumed at width ${resumed.width}`);

  // Bad wishes get the server's error; the good ones changed nothing else.
  const refusals = await b.page.evaluate(async (publisher) => {
    const codes = [];
    for (const [id, video] of [[publisher, 'ultra'], ['no-such-session', 'low']]) {
      try {
        await window.mooyaho.setSubscription(id, { video });
        codes.push('accepted');
      } catch (e) {
        codes.push(e.code);
      }
    }
    return codes;
  }, publisher.id);
  assert.deepEqual(refusals, ['invalid_message', 'session_not_found']);
  for (const page of [publisher.page, a.page, b.page]) {
    assert.deepEqual(await page.evaluate(() => window.errors), []);
  }
  assert.ok((await sfuFrames(a.page))[publisher.id] > 0);
});

test('simulcast: false publishes one encoding', async () => {
  const channel = await server.api.createChannel(true);
  const page = await sdkPage(browser, server);
  const encodings = await page.evaluate(async ({ url, channelId }) => {
    const mooyaho = new window.Mooyaho({ url, simulcast: false });
    window.mooyaho = mooyaho;
    const id = await mooyaho.connect();
    await mooyaho.integrateUser({ id, name: 'solo' });
    await mooyaho.createUserMedia({ audio: false, video: { width: 1280, height: 720 } });
    await mooyaho.enter(channelId);
    for (let i = 0; i < 50 && !mooyaho.sfuPeers.publisher; i += 1) await new Promise((r) => setTimeout(r, 100));
    const sender = mooyaho.sfuPeers.publisher.getSenders().find((s) => s.track?.kind === 'video');
    return sender.getParameters().encodings.map((e) => e.rid ?? null);
  }, { url: server.url, channelId: channel.id });
  assert.deepEqual(encodings, [null]);
});

test('smaller cameras publish the layers Chromium sends, and a default viewer decodes the top one', async () => {
  // (camera, rids asked for, the top layer's width: Chromium may scale all layers down when its
  // CPU runs short, so the viewer must decode more than the lower layer's width)
  for (const [camera, rids, width] of [[[640, 480], ['h', 'f'], 640], [[320, 240], [null], 320]]) {
    const channel = await server.api.createChannel(true);
    const publisher = await join(channel.id, camera);
    const viewer = await join(channel.id, null);
    const asked = await publisher.page.evaluate(async () => {
      for (let i = 0; i < 50 && !window.mooyaho.sfuPeers.publisher; i += 1) await new Promise((r) => setTimeout(r, 100));
      const sender = window.mooyaho.sfuPeers.publisher.getSenders().find((s) => s.track?.kind === 'video');
      return sender.getParameters().encodings.map((e) => e.rid ?? null);
    });
    assert.deepEqual(asked, rids, camera.join('×'));
    const seen = await waitFor(async () => {
      const now = await inbound(viewer, publisher.id);
      return now.frames > 10 && now.width > width / 2 ? now : null;
    }, `a viewer decoding a ${camera.join('×')} camera above width ${width / 2}`, 30_000);
    console.log(`${camera.join('×')}: the viewer decodes width ${seen.width}`);
    await publisher.page.close();
    await viewer.page.close();
  }
});
