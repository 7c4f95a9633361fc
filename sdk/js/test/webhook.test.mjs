// verifyWebhook: unit checks (good, tampered, other secret, expired, malformed) and the real
// `mooyaho dev` posting signed webhooks to a Node HTTP receiver that verifies each one with it.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createServer } from 'node:http';
import { test } from 'node:test';
import { verifyWebhook, WebhookVerificationError } from '../dist/server.js';
import { startServer, waitFor } from './helpers.mjs';

const SECRET = 'webhook-secret-for-js-tests';
const BODY = '{"id":"e1","event":"channel.created","createdAt":1700000000000,"channel":"c1"}';
const NOW = 1_700_000_000;

function sign(secret, t, body) {
  return `t=${t},v1=${createHmac('sha256', secret).update(`${t}.${body}`).digest('hex')}`;
}

function refusal(fn) {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof WebhookVerificationError, String(e));
    return e.code;
  }
  assert.fail('accepted');
}

test('a good signature gives the event, from a string or bytes', () => {
  const header = sign(SECRET, NOW - 5, BODY);
  assert.equal(verifyWebhook(BODY, header, SECRET, 300, NOW).channel, 'c1');
  assert.equal(verifyWebhook(Buffer.from(BODY), header, SECRET, 300, NOW).event, 'channel.created');
  // Several v1 values (a secret being rotated): any match will do.
  assert.ok(verifyWebhook(BODY, `${header},v1=${'0'.repeat(64)}`, SECRET, 300, NOW));
});

test('tampered bodies, other secrets and moved timestamps are bad signatures', () => {
  const header = sign(SECRET, NOW, BODY);
  assert.equal(refusal(() => verifyWebhook(BODY.replace('c1', 'c2'), header, SECRET, 300, NOW)), 'bad_signature');
  assert.equal(refusal(() => verifyWebhook(BODY, header, 'another-secret-0123456', 300, NOW)), 'bad_signature');
  const moved = header.replace(`t=${NOW}`, `t=${NOW - 1}`);
  assert.equal(refusal(() => verifyWebhook(BODY, moved, SECRET, 300, NOW)), 'bad_signature');
});

test('timestamps beyond the tolerance are expired, either way', () => {
  for (const t of [NOW - 301, NOW + 301]) {
    assert.equal(refusal(() => verifyWebhook(BODY, sign(SECRET, t, BODY), SECRET, 300, NOW)), 'expired');
  }
  assert.ok(verifyWebhook(BODY, sign(SECRET, NOW - 300, BODY), SECRET, 300, NOW));
});

// The reviewer's L4: weak secrets and nonsensical tolerances are caller errors, and a header is
// read only up to 1 KiB and 8 v1 entries.
test('short secrets, bad tolerances and oversized headers are refused', () => {
  const header = sign('short-secret', NOW, BODY);
  assert.equal(refusal(() => verifyWebhook(BODY, header, 'short-secret', 300, NOW)), 'invalid_argument');
  const good = sign(SECRET, NOW, BODY);
  for (const tolerance of [NaN, -1, Infinity, '300']) {
    assert.equal(refusal(() => verifyWebhook(BODY, good, SECRET, tolerance, NOW)), 'invalid_argument', String(tolerance));
  }
  assert.ok(verifyWebhook(BODY, good, SECRET, 0, NOW));
  const zeros = `,v1=${'0'.repeat(64)}`;
  assert.ok(verifyWebhook(BODY, good + zeros.repeat(7), SECRET, 300, NOW), 'eight v1 entries');
  const nine = `t=${NOW}${zeros.repeat(8)},v1=${good.split('v1=')[1]}`;
  assert.ok(nine.length <= 1024);
  assert.equal(refusal(() => verifyWebhook(BODY, nine, SECRET, 300, NOW)), 'malformed_header');
  const long = `${good},x=${'a'.repeat(1024)}`;
  assert.equal(refusal(() => verifyWebhook(BODY, long, SECRET, 300, NOW)), 'malformed_header');
});

test('malformed headers and bodies are refused', () => {
  const v1 = sign(SECRET, NOW, BODY).split('v1=')[1];
  for (const header of [undefined, null, '', 'garbage', `v1=${v1}`, `t=${NOW}`, `t=abc,v1=${v1}`, `t=${NOW},v1=${v1.slice(1)}`]) {
    assert.equal(refusal(() => verifyWebhook(BODY, header, SECRET, 300, NOW)), 'malformed_header', String(header));
  }
  for (const body of ['[1]', 'not json']) {
    assert.equal(refusal(() => verifyWebhook(body, sign(SECRET, NOW, body), SECRET, 300, NOW)), 'invalid_body');
  }
});

test('the real server signs its webhooks so verifyWebhook accepts them', async () => {
  const received = [];
  const refused = [];
  const receiver = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      try {
        received.push(verifyWebhook(Buffer.concat(chunks), req.headers['mooyaho-signature'], SECRET));
        res.writeHead(204).end();
      } catch (e) {
        refused.push(e.message);
        res.writeHead(401).end();
      }
    });
  });
  await new Promise((r) => receiver.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${receiver.address().port}/hooks`;
  const server = await startServer(['--webhook-url', url, '--webhook-secret', SECRET]);
  try {
    const channel = await server.api.createChannel();
    await server.api.deleteChannel(channel.id);
    await waitFor(() => received.some((e) => e.event === 'channel.deleted'), 'channel.deleted webhook');
    const mine = received.filter((e) => e.channel === channel.id).map((e) => e.event);
    assert.deepEqual(mine, ['channel.created', 'channel.deleted']);
    assert.deepEqual(refused, []);
  } finally {
    await server.stop();
    receiver.close();
  }
});
