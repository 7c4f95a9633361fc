// Direct calls: nothing connects until the callee accepts; accept → both decode; decline →
// the caller's promise rejects and no PeerConnection is made.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { assertDecodingFrom, connectClient, launchBrowser, sdkPage, sleep, startServer, waitFor } from './helpers.mjs';

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

/** Makes the page keep incoming calls in `window.calls` instead of answering. */
const holdCalls = (page) => page.evaluate(() => {
  window.calls = [];
  window.mooyaho.addEventListener('incomingCall', (call) => window.calls.push(call));
});

const connectedPeers = (page) => page.evaluate(() => window.events.filter((e) => e.type === 'peerConnected').map((e) => e.sessionId));

test('accepted direct call: both sides decode video, only after accept', async () => {
  const caller = await sdkPage(browser, server);
  const callee = await sdkPage(browser, server);
  const callerId = await connectClient(caller, server, { allowDirectCall: true });
  const calleeId = await connectClient(callee, server, { allowDirectCall: true });
  await holdCalls(callee);

  await caller.evaluate((to) => {
    window.result = window.mooyaho.directCall(to).then(() => 'answered', (e) => `rejected:${e.code}`);
  }, calleeId);
  await callee.waitForFunction(() => window.calls.length === 1);
  assert.equal(await callee.evaluate(() => window.calls[0].sessionId), callerId);
  // Ringing: no auto-answer, so the callee has no PeerConnection and the caller's promise is pending.
  await sleep(500);
  assert.equal(await callee.evaluate(() => window.mooyaho.peers.size), 0);
  assert.equal(await caller.evaluate(() => Promise.race([window.result, new Promise((r) => setTimeout(() => r('pending'), 50))])), 'pending');

  await callee.evaluate(() => window.calls[0].accept());
  assert.equal(await caller.evaluate(() => window.result), 'answered');
  const atCaller = await assertDecodingFrom(caller, [calleeId], 'caller');
  const atCallee = await assertDecodingFrom(callee, [callerId], 'callee');
  assert.ok(atCaller[calleeId] > 5 && atCallee[callerId] > 5);
  assert.deepEqual(await connectedPeers(caller), [calleeId]);

  // Hang-up releases the PeerConnection and the stream, and the other side notices promptly.
  await caller.evaluate((id) => window.mooyaho.hangUp(id), calleeId);
  assert.deepEqual(await caller.evaluate(() => [window.mooyaho.peers.size, window.mooyaho.remoteStreams.size]), [0, 0]);
  const hungUpAt = Date.now();
  await waitFor(() => callee.evaluate((id) => window.events.some((e) => e.type === 'peerDisconnected' && e.sessionId === id), callerId), 'callee to see the hang-up', 4000);
  assert.ok(Date.now() - hungUpAt < 3000, `hang-up seen in ${Date.now() - hungUpAt} ms`);
  assert.deepEqual(await callee.evaluate(() => [window.mooyaho.peers.size, window.mooyaho.remoteStreams.size]), [0, 0]);
  await caller.close();
  await callee.close();
});

test('declined direct call: the promise rejects with the reason and nothing connects', async () => {
  const caller = await sdkPage(browser, server);
  const callee = await sdkPage(browser, server);
  await connectClient(caller, server, { allowDirectCall: true });
  const calleeId = await connectClient(callee, server, { allowDirectCall: true });
  await callee.evaluate(() => window.mooyaho.addEventListener('incomingCall', (call) => call.reject('busy')));

  const outcome = await caller.evaluate((to) => window.mooyaho.directCall(to).then(
    () => ({ ok: true }),
    (e) => ({ ok: false, code: e.code, message: e.message }),
  ), calleeId);
  assert.deepEqual(outcome, { ok: false, code: 'rejected', message: 'busy' });
  const rejected = await caller.evaluate(() => window.events.filter((e) => e.type === 'callRejected'));
  assert.deepEqual(rejected.map((e) => [e.sessionId, e.reason]), [[calleeId, 'busy']]);

  await sleep(1000); // give a (wrongly) surviving PeerConnection time to connect
  // Candidates still in flight when the callee declined are refused `forbidden` by then; the
  // SDK drops those refusals instead of reporting them as errors.
  const errors = await caller.evaluate(() => window.events.filter((e) => e.type === 'error').map((e) => e.code));
  assert.deepEqual(errors, []);
  assert.equal(await caller.evaluate(() => window.mooyaho.peers.size), 0);
  assert.equal(await callee.evaluate(() => window.mooyaho.peers.size), 0);
  assert.deepEqual(await connectedPeers(caller), []);
  assert.deepEqual(await connectedPeers(callee), []);
  await caller.close();
  await callee.close();
});

test('a client without allowDirectCall cannot be called: the server refuses', async () => {
  const caller = await sdkPage(browser, server);
  const callee = await sdkPage(browser, server);
  await connectClient(caller, server, { allowDirectCall: true });
  const calleeId = await connectClient(callee, server, { allowDirectCall: false });
  const code = await caller.evaluate((to) => window.mooyaho.directCall(to).then(() => 'answered', (e) => e.code), calleeId);
  assert.equal(code, 'forbidden');
  assert.equal(await caller.evaluate(() => window.mooyaho.peers.size), 0);
  await waitFor(async () => (await callee.evaluate(() => window.mooyaho.peers.size)) === 0, 'no callee PC');
  await caller.close();
  await callee.close();
});
