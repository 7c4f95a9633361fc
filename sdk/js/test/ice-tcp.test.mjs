// ICE-TCP (RFC 6544): `mooyaho dev --ice-tcp` announces a passive TCP candidate per worker after
// its UDP ones. The server runs in a network namespace the test makes (its own address, as
// another host), where an nftables rule drops every UDP datagram arriving from outside for the
// node's media port — a firewall that lets only TCP through. Chromium pages still join an SFU
// channel and decode each other: their selected candidate pairs are TCP, the rule really dropped
// their UDP attempts, and the node counts the TCP connections in /metrics.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { assertDecodingFrom, blockUdp, connectClient, createNamespace, launchBrowser, sdkPage, sfuFrames, sfuSelectedRemotes, startServer } from './helpers.mjs';

let namespace;
let server;
let browser;
let block;
before(async () => {
  assert.equal(process.getuid(), 0, 'this test makes a network namespace: run it as root');
  namespace = createNamespace('tcp');
  server = await startServer(['--ice-tcp', '--workers', '1'], { netns: namespace.name, host: namespace.address });
  // Plain http to another host: trust the origin so the page gets its (fake) camera.
  browser = await launchBrowser([`--unsafely-treat-insecure-origin-as-secure=${server.url}`]);
});
after(async () => {
  block?.heal();
  await browser?.close();
  await server?.stop();
  namespace?.remove();
});

test('with UDP to the node blocked, Chromium pages meet in an SFU channel over ICE-TCP', async () => {
  const ports = server.mediaPorts();
  assert.equal(ports.length, 1, `one worker's UDP port: ${ports}`);
  block = blockUdp(ports, { netns: namespace.name });
  const channel = await server.api.createChannel(true);
  const pages = [await sdkPage(browser, server), await sdkPage(browser, server)];
  const ids = [];
  for (const [i, page] of pages.entries()) ids.push(await connectClient(page, server, { name: `tcp-${i}` }));
  for (const page of pages) await page.evaluate((c) => window.mooyaho.enter(c), channel.id);

  await assertDecodingFrom(pages[0], [ids[1]], 'page 0', sfuFrames);
  await assertDecodingFrom(pages[1], [ids[0]], 'page 1', sfuFrames);
  for (const page of pages) {
    const protocols = (await sfuSelectedRemotes(page)).map((r) => r.protocol);
    assert.ok(protocols.length === 2 && protocols.every((p) => p === 'tcp'), `selected pairs: ${protocols}`);
  }
  // UDP was tried and dropped: the pages really had no UDP path.
  assert.ok(block.dropped() > 0, 'no UDP datagram was dropped');
  const metrics = await (await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${server.apiKey}` } })).text();
  const accepted = Number(/mooyaho_sfu_ice_tcp_accepted_total\{[^}]*\} (\d+)/.exec(metrics)?.[1] ?? 0);
  assert.ok(accepted >= 4, `ICE-TCP connections accepted: ${accepted}`);
  for (const page of pages) await page.close();
});
