// Browser calibration (issue 17, by hand): 1 headless-Chromium publisher → 4 Chromium viewers
// through `mooyaho dev` (one worker, pinned to CPU 0), measuring what the load generator's
// figures should be read against:
// - join → first decoded frame per viewer (performance.now() around `enter`, framesDecoded
//   polled in the page every 10 ms; goal < 300 ms on loopback);
// - SFU CPU per out-packet with real browsers (viewers' inbound-rtp packetsReceived over a
//   window, SFU process CPU from /proc), next to the same packet rate and size from
//   `mooyaho loadgen` (1 publisher × 4 subscribers, fanout) against a fresh server.
//
//   cargo build --release --bin mooyaho && (cd sdk/js && npm ci && npm run build)
//   node benches/browser/calibration.mjs [--window 10] [--report benches/results/browser-calibration.json]
//
// The browsers run on CPU 1 with the generator's role; Chromium encodes with its fake camera
// (VP8, 320×240) and microphone, so the packet mix is the browser's own.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchBrowser, repoRoot, sleep, startServer, waitFor } from '../../sdk/js/test/helpers.mjs';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const windowSeconds = Number(arg('window', '10'));
const reportPath = arg('report', join(repoRoot, 'benches/results/browser-calibration.json'));
const binary = process.env.MOOYAHO_RELEASE_BIN ?? join(repoRoot, 'target/release/mooyaho');

// The server pinned to CPU 0 through a wrapper the helpers spawn (exec keeps the pid).
const wrapper = join(mkdtempSync(join(tmpdir(), 'mooyaho-calibration-')), 'mooyaho');
writeFileSync(wrapper, `#!/bin/sh\nexec taskset -c 0 ${binary} "$@"\n`);
chmodSync(wrapper, 0o755);
process.env.MOOYAHO_BIN = wrapper;

const ticks = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / ticks;
}

async function page(browser, server) {
  const p = await browser.context.newPage();
  p.on('pageerror', (e) => console.error('[page error]', e.message));
  await p.goto(`${server.url}/demo/test.html`);
  await p.waitForFunction(() => window.sdkReady === true);
  return p;
}

/** Packets received and sent over the SFU PeerConnections of a page. */
const rtpCounts = (p) => p.evaluate(async () => {
  const out = { received: 0, sent: 0, sentBytes: 0 };
  for (const pc of [window.mooyaho.sfuPeers.subscriber, window.mooyaho.sfuPeers.publisher]) {
    if (!pc) continue;
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp') out.received += r.packetsReceived ?? 0;
      if (r.type === 'outbound-rtp') { out.sent += r.packetsSent ?? 0; out.sentBytes += r.bytesSent ?? 0; }
    });
  }
  return out;
});

const server = await startServer(['--workers', '1']);
const browser = await launchBrowser();
const result = { date: new Date().toISOString(), windowSeconds, binary };
try {
  const commit = spawnSync('git', ['rev-parse', 'HEAD'], { cwd: repoRoot }).stdout.toString().trim();
  result.commit = commit;
  const channel = await server.api.createChannel(true);
  const publisher = await page(browser, server);
  const publisherId = await publisher.evaluate(async ({ url, channel }) => {
    const mooyaho = new window.Mooyaho({ url });
    window.mooyaho = mooyaho;
    const id = await mooyaho.connect();
    await mooyaho.integrateUser({ id, name: 'publisher' });
    await mooyaho.createUserMedia({ audio: true, video: { width: 320, height: 240 } });
    await mooyaho.enter(channel);
    return id;
  }, { url: server.url, channel: channel.id });
  await waitFor(() => publisher.evaluate(() => window.mooyaho.sfuPeers.publisher?.connectionState === 'connected'), 'publisher connected', 20_000);

  // Viewers join one at a time (no camera: they only subscribe); each times its own join.
  const viewers = [];
  result.joinToFirstFrameMs = [];
  for (let i = 0; i < 4; i += 1) {
    const viewer = await page(browser, server);
    const ms = await viewer.evaluate(async ({ url, channel, publisherId }) => {
      const mooyaho = new window.Mooyaho({ url });
      window.mooyaho = mooyaho;
      const id = await mooyaho.connect();
      await mooyaho.integrateUser({ id, name: 'viewer' });
      const started = performance.now();
      await mooyaho.enter(channel);
      for (;;) {
        const pc = mooyaho.sfuPeers.subscriber;
        const track = mooyaho.remoteStreams.get(publisherId)?.getVideoTracks()[0];
        if (pc && track) {
          let decoded = 0;
          (await pc.getStats(track)).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') decoded += r.framesDecoded ?? 0; });
          if (decoded > 0) return performance.now() - started;
        }
        if (performance.now() - started > 20_000) throw new Error('no decoded frame within 20 s');
        await new Promise((r) => setTimeout(r, 10));
      }
    }, { url: server.url, channel: channel.id, publisherId });
    result.joinToFirstFrameMs.push(Math.round(ms));
    viewers.push(viewer);
  }

  await sleep(2000); // past the first keyframes and bitrate ramp-up
  const before = await Promise.all(viewers.map(rtpCounts));
  const sentBefore = await rtpCounts(publisher);
  const cpuBefore = cpuSeconds(server.pid);
  await sleep(windowSeconds * 1000);
  const cpu = cpuSeconds(server.pid) - cpuBefore;
  const afterCounts = await Promise.all(viewers.map(rtpCounts));
  const sentAfter = await rtpCounts(publisher);
  const outPackets = afterCounts.reduce((n, c, i) => n + c.received - before[i].received, 0);
  const sent = sentAfter.sent - sentBefore.sent;
  result.browser = {
    publisherPacketsPerSecond: sent / windowSeconds,
    publisherMeanPacketBytes: sent ? (sentAfter.sentBytes - sentBefore.sentBytes) / sent : null,
    outPacketsPerSecond: outPackets / windowSeconds,
    sfuCpuSeconds: cpu,
    outPacketsPerSfuCpuSecond: cpu > 0 ? outPackets / cpu : null,
  };
} finally {
  await browser.close();
  await server.stop();
}

// The same packet rate and size from the load generator: 1 publisher × 4 subscribers.
{
  const pps = Math.max(1, Math.round(result.browser.publisherPacketsPerSecond));
  const size = Math.min(1400, Math.max(32, Math.round(result.browser.publisherMeanPacketBytes ?? 1000)));
  const server = await startServer(['--workers', '1'], { anonymous: false });
  try {
    const report = join(mkdtempSync(join(tmpdir(), 'mooyaho-calibration-')), 'loadgen.json');
    const run = spawnSync('taskset', ['-c', '1', binary, 'loadgen', '--quiet', '--url', server.url, '--api-key', server.apiKey,
      '--sfu-pid', String(server.pid), '--scenario', 'fanout', '--subscribers', '4', '--pps', String(pps), '--size', String(size),
      '--duration', String(windowSeconds), '--report', report], { stdio: ['ignore', 'inherit', 'inherit'] });
    if (run.status !== 0) throw new Error(`loadgen failed with ${run.status}`);
    const r = JSON.parse(readFileSync(report, 'utf8'));
    result.loadgen = {
      pps, size,
      outPacketsPerSecond: r.outPacketsPerSecond,
      sfuCpuSeconds: r.sfuCpuSeconds,
      outPacketsPerSfuCpuSecond: r.outPacketsPerSfuCpuSecond,
      lossPercent: r.lossPercent,
    };
    if (result.browser.outPacketsPerSfuCpuSecond && r.outPacketsPerSfuCpuSecond) {
      result.loadgenOverBrowser = r.outPacketsPerSfuCpuSecond / result.browser.outPacketsPerSfuCpuSecond;
    }
  } finally {
    await server.stop();
  }
}
writeFileSync(reportPath, `${JSON.stringify(result, null, 2)}\n`);
console.log(JSON.stringify(result, null, 2));
