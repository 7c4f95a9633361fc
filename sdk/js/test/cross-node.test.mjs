// A channel larger than one node (issue 15, DESIGN §7.2) in real browsers: `mooyaho server
// --span-nodes` and two `mooyaho sfu --max-transports 1`. Ada's publish transport fills the node
// her channel is placed on (a member's other side is always admitted beside it); Bob is served
// by the other node. Signaling opens relay links between the two nodes, and each page decodes
// the other's video through them.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { assertDecodingFrom, connectClient, launchBrowser, sdkPage, sfuFrames, startFleet, waitFor } from './helpers.mjs';

const skip = process.env.MOOYAHO_SFU_E2E === '0' ? { skip: 'MOOYAHO_SFU_E2E=0' } : {};

let fleet;
let browser;
before(async () => {
  fleet = await startFleet(2, { serverArgs: ['--span-nodes'], nodeArgs: ['--max-transports', '1'] });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await fleet?.stop();
});

async function join(channelId, name) {
  const page = await sdkPage(browser, fleet);
  const id = await connectClient(page, fleet, { name });
  await page.evaluate((c) => window.mooyaho.enter(c), channelId);
  return { page, id, name };
}

test('a viewer served by a second node decodes a publisher on the first through a relay link, and back', skip, async () => {
  const channel = await fleet.api.createChannel(true);
  const ada = await join(channel.id, 'Ada');
  await waitFor(async () => (await fleet.api.getChannel(channel.id)).sfuServerIds?.length === 1, 'Ada placed on one node');
  const first = (await fleet.api.getChannel(channel.id)).sfuServerIds[0];
  const bob = await join(channel.id, 'Bob');

  // Bob's transports cannot fit on Ada's node: the channel spans both nodes.
  await waitFor(async () => (await fleet.api.getChannel(channel.id)).sfuServerIds?.length === 2, 'the channel spans two nodes', 20_000);
  const ids = (await fleet.api.getChannel(channel.id)).sfuServerIds;
  assert.deepEqual([...ids].sort(), [...fleet.nodeIds].sort());
  assert.ok(ids.includes(first));

  await assertDecodingFrom(bob.page, [ada.id], 'Bob (second node) decodes Ada (first node)', sfuFrames);
  await assertDecodingFrom(ada.page, [bob.id], 'Ada (first node) decodes Bob (second node)', sfuFrames);

  // The media crosses between the nodes: each node reports relay links (load reports come
  // every second or so).
  const linked = async () => {
    const nodes = await fleet.api.listSfuServers();
    return nodes.length === 2 && nodes.every((n) => (n.load?.relayLinksOut ?? 0) > 0 && (n.load?.relayLinksIn ?? 0) > 0);
  };
  await waitFor(linked, 'a relay link each way on both nodes', 10_000);
  for (const c of [ada, bob]) {
    const errors = await c.page.evaluate(() => window.events.filter((e) => e.type === 'error'));
    assert.deepEqual(errors, [], `${c.name}: no error`);
    await c.page.close();
  }
});
