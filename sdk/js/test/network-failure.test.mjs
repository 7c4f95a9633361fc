// A real network failure (issue 13): the SDK recovers by itself when an SFU PeerConnection goes
// `failed` because its path is gone, not because a test said so. A real fleet (`mooyaho server` +
// one `mooyaho sfu`), two pages in an SFU channel; an nftables rule (added and removed by the
// test, as root) drops every UDP datagram to or from Fay's two SFU transports (the local ports of
// their selected ICE candidate pairs), so Chromium's consent checks go unanswered until it
// declares the PeerConnections `failed` (consent freshness: ~30 s). Then the rule goes, and the
// SDK — with no application code — leaves, re-enters and publishes again on new PeerConnections:
// both pages decode each other again. Gus, on the same node, is never cut and gets no error.
// Takes ~20 s more than the other SFU tests: Chromium declares `failed` ~18 s after the cut.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { assertDecodingFrom, blockUdp, joinSfuRecordingRecovery, launchBrowser, sfuFrames, startFleet, waitFor } from './helpers.mjs';

let fleet;
let browser;
before(async () => {
  fleet = await startFleet(1);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await fleet?.stop();
});

const skip = process.env.MOOYAHO_SFU_E2E === '0' ? { skip: 'MOOYAHO_SFU_E2E=0' } : {};

const joinSfu = (channelId, name) => joinSfuRecordingRecovery(browser, fleet, channelId, name);

/**
 * Every local UDP port of Fay's two SFU PeerConnections (each host candidate has its own: with
 * only the selected pair's port cut, ICE would move to another pair and never fail).
 */
function sfuPorts(page) {
  return page.evaluate(async () => {
    const ports = new Set();
    for (const pc of [window.mooyaho.sfuPeers.publisher, window.mooyaho.sfuPeers.subscriber]) {
      (await pc.getStats()).forEach((r) => { if (r.type === 'local-candidate' && r.port && r.protocol === 'udp') ports.add(r.port); });
    }
    return [...ports];
  });
}

test('a real network failure: UDP of one page cut until its SFU PeerConnections go failed, then healed — the SDK recovers by itself', skip, async () => {
  const channel = await fleet.api.createChannel(true);
  const fay = await joinSfu(channel.id, 'Fay');
  const gus = await joinSfu(channel.id, 'Gus');
  await assertDecodingFrom(fay.page, [gus.id], 'Fay before', sfuFrames);
  await assertDecodingFrom(gus.page, [fay.id], 'Gus before', sfuFrames);

  const ports = await sfuPorts(fay.page);
  assert.ok(ports.length >= 2, `Fay's publish and subscribe transports: ${ports}`);
  await fay.page.evaluate(() => {
    window.before = { ...window.mooyaho.sfuPeers };
    window.states = [];
    // Each state as the SDK's handler is about to see it (that handler closes a PeerConnection
    // that reports `failed`, so a listener running after it would read `closed`).
    for (const [side, pc] of [['publish', window.before.publisher], ['subscribe', window.before.subscriber]]) {
      const sdk = pc.onconnectionstatechange;
      pc.onconnectionstatechange = (event) => {
        window.states.push({ side, state: pc.connectionState, at: Date.now() });
        sdk?.call(pc, event);
      };
    }
  });
  const cutAt = Date.now();
  let cutDrops = 0;
  const block = blockUdp(ports);
  try {
    // The SDK reports the `failed` it saw (and starts recovering at once, on new sockets).
    await waitFor(
      () => fay.page.evaluate(() => window.recovery.some((e) => e.type === 'reconnecting' && e.reason === 'failed')),
      "Fay's SFU PeerConnection failed",
      60_000,
    ).catch(async (e) => {
      const states = await fay.page.evaluate(() => window.states);
      const recovery = await fay.page.evaluate(() => window.recovery);
      const events = await fay.page.evaluate(() => window.events);
      throw new Error(`${e.message}: states ${JSON.stringify(states)}, ${block.dropped()} datagrams dropped from ports ${ports}; cut at ${cutAt}; recovery ${JSON.stringify(recovery)}; events ${JSON.stringify(events)}`);
    });
    cutDrops = block.dropped();
  } finally {
    block.heal();
  }
  const healedAt = Date.now();
  const states = await fay.page.evaluate(() => window.states.map((s) => `${s.side}:${s.state}`));
  console.log(`network failure: cut → failed ${healedAt - cutAt} ms (${states.join(' → ')})`);
  assert.ok(states.some((s) => s.endsWith(':failed')), `a PeerConnection failed: ${states}`);
  // The application is told, with a code it can show and a reason naming the layer.
  const failures = await fay.page.evaluate(() => window.events.filter((e) => e.type === 'error' && e.code === 'media_connection_failed'));
  assert.ok(failures.length >= 1 && failures.every((e) => /\(ICE\)/.test(e.message)), `Fay's errors: ${JSON.stringify(failures)}`);
  // The cut was real: Fay's datagrams (consent checks, media) were dropped.
  assert.ok(cutDrops > 0, 'nothing was dropped');
  console.log(`network failure: ${cutDrops} datagrams dropped from/to ports ${ports}`);

  await waitFor(
    () => fay.page.evaluate(() => window.recovery.some((e) => e.type === 'reconnected' && e.what === 'sfu')),
    'Fay reconnected',
    30_000,
  );
  const recoveredAt = Date.now();
  const seen = await fay.page.evaluate(() => window.recovery.map((e) => `${e.type}:${e.what ?? ''}:${e.reason ?? ''}`));
  assert.ok(seen.includes('reconnecting:sfu:failed'), `${seen}`);
  assert.ok(
    await fay.page.evaluate(() => window.mooyaho.sfuPeers.publisher !== window.before.publisher && window.mooyaho.sfuPeers.subscriber !== window.before.subscriber),
    'new SFU PeerConnections',
  );
  await assertDecodingFrom(gus.page, [fay.id], 'Gus sees Fay again', sfuFrames);
  await assertDecodingFrom(fay.page, [gus.id], 'Fay sees Gus again', sfuFrames);
  console.log(`network failure: healed → reconnected ${recoveredAt - healedAt} ms, decoding both ways ${Date.now() - healedAt} ms`);
  assert.equal(await fay.page.evaluate(() => window.mooyaho.channelId), channel.id);
  const errors = await gus.page.evaluate(() => window.events.filter((e) => e.type === 'error'));
  assert.deepEqual(errors, [], 'Gus: no error');
  for (const { page } of [fay, gus]) await page.close();
});
