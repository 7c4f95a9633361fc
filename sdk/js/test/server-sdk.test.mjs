// The Node server SDK against a running server: every method, and its typed errors.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { MooyahoApiError, MooyahoServer, createJoinToken } from '../dist/server.js';
import { connectClient, launchBrowser, sdkPage, startServer, waitFor } from './helpers.mjs';

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

async function rejectsWith(promise, status) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof MooyahoApiError, `MooyahoApiError, got ${e}`);
    assert.equal(e.status, status);
    assert.ok(e.message.length > 0);
    return true;
  });
}

test('channels: create, list, get, delete, bulk delete', async () => {
  const { api } = server;
  const mesh = await api.createChannel();
  const sfu = await api.createChannel(true);
  assert.equal(mesh.sfuEnabled, false);
  assert.equal(sfu.sfuEnabled, true);
  assert.notEqual(mesh.id, sfu.id);

  const listed = await api.listChannels();
  const byId = new Map(listed.map((c) => [c.id, c]));
  assert.equal(byId.get(mesh.id)?.sessionCount, 0);
  assert.equal(byId.get(sfu.id)?.sfuEnabled, true);

  const got = await api.getChannel(mesh.id);
  assert.deepEqual({ id: got.id, sessions: got.channelSessions }, { id: mesh.id, sessions: [] });

  await api.deleteChannel(sfu.id);
  await rejectsWith(api.getChannel(sfu.id), 404);
  await rejectsWith(api.deleteChannel(sfu.id), 404);

  const extra = await api.createChannel();
  const result = await api.bulkDeleteChannels([mesh.id, extra.id, 'no-such-channel']);
  assert.deepEqual(result.deleted.sort(), [mesh.id, extra.id].sort());
  assert.deepEqual(result.notFound, ['no-such-channel']);
  const remaining = (await api.listChannels()).map((c) => c.id);
  assert.ok(!remaining.includes(mesh.id) && !remaining.includes(extra.id));
});

test('integrateUser binds a browser session; deleteChannel closes it for members', async () => {
  const { api } = server;
  const channel = await api.createChannel();
  const page = await sdkPage(browser, server);
  const sessionId = await connectClient(page, server);
  const integrated = await api.integrateUser(sessionId, { id: 'user-1', name: 'Ada' });
  assert.deepEqual(integrated, { sessionId, user: { id: 'user-1', name: 'Ada' } });
  await waitFor(() => page.evaluate(() => window.events.some((e) => e.type === 'integrated')), 'integrated event');

  await page.evaluate((c) => window.mooyaho.enter(c), channel.id);
  const got = await api.getChannel(channel.id);
  assert.deepEqual(got.channelSessions, [{ sessionId, user: { id: 'user-1', name: 'Ada' } }]);
  assert.equal((await api.listChannels()).find((c) => c.id === channel.id)?.sessionCount, 1);

  await api.deleteChannel(channel.id);
  await waitFor(() => page.evaluate(() => window.events.some((e) => e.type === 'channelClosed')), 'channelClosed event');
  assert.equal(await page.evaluate(() => window.mooyaho.channelId), '');

  await rejectsWith(api.integrateUser('no-such-session', { id: 'x' }), 404);
  await rejectsWith(api.integrateUser(sessionId, { id: '' }), 400);
  await page.close();
});

test('SFU servers: create, list, get, update, drain, delete', async () => {
  const { api } = server;
  const node = await api.createSfuServer('127.0.0.1:7443');
  assert.equal(node.address, '127.0.0.1:7443');
  assert.equal(node.disabled, false);
  assert.equal(node.draining, false);
  assert.ok((await api.listSfuServers()).some((n) => n.id === node.id));
  assert.deepEqual(await api.getSfuServer(node.id), node);

  const updated = await api.updateSfuServer(node.id, { disabled: true, address: '127.0.0.1:7444' });
  assert.equal(updated.disabled, true);
  assert.equal(updated.address, '127.0.0.1:7444');
  const drained = await api.drainSfuServer(node.id);
  assert.equal(drained.draining, true);

  await api.deleteSfuServer(node.id);
  await rejectsWith(api.getSfuServer(node.id), 404);
  await rejectsWith(api.deleteSfuServer(node.id, true), 404);
  await rejectsWith(api.createSfuServer('not an address'), 400);
});

test('typed errors: bad key, unreachable server, bad base URL; instances do not share config', async () => {
  const wrong = new MooyahoServer({ baseUrl: server.url, apiKey: 'x'.repeat(32) });
  await rejectsWith(wrong.listChannels(), 401);
  // The right instance still works after the wrong one was used (no shared global client).
  assert.ok(Array.isArray(await server.api.listChannels()));

  const down = new MooyahoServer({ baseUrl: 'http://127.0.0.1:9', apiKey: server.apiKey, timeoutMs: 2000 });
  await rejectsWith(down.listChannels(), 0);
  assert.throws(() => new MooyahoServer({ baseUrl: 'ftp://x', apiKey: 'k' }), TypeError);
});

test('createJoinToken signs offline a token the server accepts; createToken signs over REST', async () => {
  const { api } = server;
  const channel = await api.createChannel();
  const token = createJoinToken(server.apiKey, { userId: 'node-user', name: 'Nod', channel: channel.id });
  const page = await sdkPage(browser, server);
  const joined = await page.evaluate(async ({ url, token, channel }) => {
    const mooyaho = new window.Mooyaho({ url, token });
    await mooyaho.connect();
    await mooyaho.enter(channel);
    return mooyaho.sessionsArray.map((s) => s.user);
  }, { url: server.url, token, channel: channel.id });
  assert.deepEqual(joined, [{ id: 'node-user', name: 'Nod' }]);
  const got = await api.getChannel(channel.id);
  assert.deepEqual(got.channelSessions.map((s) => s.user), [{ id: 'node-user', name: 'Nod' }]);

  // The same grant signed over REST; bad input is a 400; a forged token is refused at connect.
  const minted = await api.createToken({ userId: 'rest-user', channel: channel.id, ttlSeconds: 60 });
  assert.equal(minted.token.split('.').length, 3);
  assert.ok(minted.expiresAt > Date.now() / 1000);
  await rejectsWith(api.createToken({ userId: 'rest-user', channel: channel.id, ttlSeconds: 0 }), 400);
  const forged = createJoinToken('not-the-secret-0123456789', { userId: 'mallory', channel: channel.id });
  const refused = await page.evaluate(async ({ url, token }) => {
    try {
      await new window.Mooyaho({ url, token, requestTimeoutMs: 3000 }).connect();
      return 'connected';
    } catch (e) {
      return e.code;
    }
  }, { url: server.url, token: forged });
  assert.equal(refused, 'disconnected');
  assert.throws(() => createJoinToken('', { userId: 'a', channel: channel.id }), TypeError);
  await page.close();
});
