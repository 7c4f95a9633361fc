// A stand-in SFU for exercising the client SDK's SFU flow apart from the real media node.
// It runs in its own browser page (RTCPeerConnections forwarding received tracks), and the
// clients' WebSockets are proxied so that `isSFU` messages go to it instead of the server;
// everything else still reaches the real `mooyaho dev`. Like the real SFU contract (DESIGN §3):
// one publish PC per client that it answers, one subscribe PC per client that it offers and
// re-offers as publishers come and go, remote stream ids = publishing session ids.

const SFU_PAGE_CODE = () => {
  const gathered = (pc) => new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    const done = () => { if (pc.iceGatheringState === 'complete') resolve(); };
    pc.addEventListener('icegatheringstatechange', done);
    setTimeout(resolve, 3000);
  });
  const sfu = {
    pubs: new Map(), // clientId -> { pc, stream }
    subs: new Map(), // clientId -> { pc, sent: Map<track, { sender, from }>, chain, onAnswer }
    offers: 0,
    async publish(clientId, sdp) {
      const pc = new RTCPeerConnection();
      const stream = new MediaStream();
      this.pubs.set(clientId, { pc, stream });
      pc.ontrack = (e) => stream.addTrack(e.track);
      await pc.setRemoteDescription({ type: 'offer', sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await gathered(pc);
      this.join(clientId);
      for (const id of this.subs.keys()) this.renegotiate(id);
      return pc.localDescription.sdp;
    },
    /** A member entered the SFU channel: it gets a subscribe PC whether or not it publishes. */
    join(clientId) {
      if (this.subs.has(clientId)) return Promise.resolve();
      this.subs.set(clientId, { pc: new RTCPeerConnection(), sent: new Map(), chain: Promise.resolve(), onAnswer: null });
      return this.renegotiate(clientId);
    },
    /** Queues a re-offer; resolves once it was sent (or found unnecessary), not when answered. */
    renegotiate(clientId) {
      const sub = this.subs.get(clientId);
      if (!sub) return Promise.resolve();
      let sent;
      const offered = new Promise((resolve) => { sent = resolve; });
      sub.chain = sub.chain.then(async () => {
        let changed = false;
        for (const [from, pub] of this.pubs) {
          if (from === clientId) continue;
          for (const track of pub.stream.getTracks()) {
            if (sub.sent.has(track)) continue;
            sub.sent.set(track, { sender: sub.pc.addTrack(track, pub.stream), from });
            changed = true;
          }
        }
        for (const [track, { sender, from }] of sub.sent) {
          if (this.pubs.has(from)) continue;
          sub.pc.removeTrack(sender);
          sub.sent.delete(track);
          changed = true;
        }
        if (!changed || sub.pc.signalingState === 'closed') return sent();
        await sub.pc.setLocalDescription(await sub.pc.createOffer());
        await gathered(sub.pc);
        let sdp = sub.pc.localDescription.sdp;
        // The contract: each stream id names the publishing session.
        for (const [from, pub] of this.pubs) sdp = sdp.split(pub.stream.id).join(from);
        const answered = new Promise((resolve) => { sub.onAnswer = resolve; });
        this.offers++;
        await window.toClient(clientId, { type: 'called', isSFU: true, from: null, sdp });
        sent();
        await sub.pc.setRemoteDescription({ type: 'answer', sdp: await answered });
      }).catch((e) => { sent(); console.error('fake SFU renegotiation', e); });
      return offered;
    },
    answer(clientId, sdp) {
      this.subs.get(clientId)?.onAnswer?.(sdp);
    },
    async candidate(clientId, candidate) {
      for (const pc of [this.pubs.get(clientId)?.pc, this.subs.get(clientId)?.pc]) {
        if (pc && candidate) await pc.addIceCandidate(candidate).catch(() => undefined); // other PC's ufrag
      }
    },
    leave(clientId) {
      this.pubs.get(clientId)?.pc.close();
      this.subs.get(clientId)?.pc.close();
      this.pubs.delete(clientId);
      this.subs.delete(clientId);
      for (const id of this.subs.keys()) this.renegotiate(id);
    },
  };
  window.sfu = sfu;
};

export async function startFakeSfu(browser, server) {
  const page = await browser.context.newPage();
  const clients = new Map(); // sessionId -> client-side WebSocketRoute
  await page.exposeFunction('toClient', (clientId, frame) => clients.get(clientId)?.send(JSON.stringify(frame)));
  await page.goto(`${server.url}/demo/test.html`);
  await page.evaluate(SFU_PAGE_CODE);

  async function handle(sessionId, frame) {
    switch (frame.type) {
      case 'call':
        return { type: 'answered', isSFU: true, from: null, sdp: await page.evaluate(([id, sdp]) => window.sfu.publish(id, sdp), [sessionId, frame.sdp]) };
      case 'answer':
        await page.evaluate(([id, sdp]) => window.sfu.answer(id, sdp), [sessionId, frame.sdp]);
        return { type: 'ack' };
      case 'candidate':
        await page.evaluate(([id, c]) => window.sfu.candidate(id, c), [sessionId, frame.candidate]);
        return { type: 'ack' };
      default:
        return { type: 'error', code: 'invalid_message', message: 'fake SFU' };
    }
  }

  // Frames still in flight when the test closes the browser fail against a closed page: that is
  // teardown, not a finding. Anything else is printed (the test fails on its own timeouts).
  const reportUnlessClosed = (e) => {
    if (!page.isClosed()) console.error('[fake SFU]', e.message);
  };

  return {
    page,
    offers: () => page.evaluate(() => window.sfu.offers),
    /** Routes `page`'s signaling through the fake SFU; call before the page loads. */
    async attach(clientPage) {
      await clientPage.routeWebSocket(/\/websocket/, (ws) => {
        const upstream = ws.connectToServer();
        let sessionId = null;
        // Frames are relayed in order even though handling one may wait for the fake SFU.
        let relay = Promise.resolve();
        upstream.onMessage((m) => {
          relay = relay.then(async () => {
            const frame = JSON.parse(String(m));
            if (frame.type === 'connected' || frame.type === 'reuseIdSuccess') {
              sessionId = frame.id;
              clients.set(sessionId, ws);
            }
            // Like the real server, which asks its node for an offer while handling `enter`: the
            // first subscribe offer reaches the client before `enterSuccess`.
            if (frame.type === 'enterSuccess' && frame.sfuEnabled) await page.evaluate((id) => window.sfu.join(id), sessionId);
            ws.send(m);
          }).catch(reportUnlessClosed);
        });
        ws.onMessage((m) => (async () => {
          const frame = JSON.parse(String(m));
          if (frame.type === 'leave') await page.evaluate((id) => window.sfu.leave(id), sessionId);
          if (frame.isSFU !== true) {
            upstream.send(m);
            return;
          }
          const reply = await handle(sessionId, frame);
          ws.send(JSON.stringify({ ...reply, requestId: frame.requestId }));
        })().catch(reportUnlessClosed));
      });
    },
  };
}
