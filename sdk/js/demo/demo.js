// The demo page: a mesh/SFU channel room (/?channel=<id>) and a direct-call page (/?call).
// It uses only the public SDK, exactly as an application would.
import { Mooyaho } from '/sdk/mooyaho.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const callMode = params.has('call');

function show(id, visible = true) { $(id).hidden = !visible; }
function setStatus(text, online) { $('status').textContent = text; $('status').classList.toggle('online', online); }

function banner(text, kind = 'error') {
  const el = $('banner');
  el.textContent = text;
  el.className = `banner ${kind === 'info' ? 'info' : ''}`;
  el.hidden = !text;
}

/** Turns SDK errors into something a person can act on. */
function explain(error) {
  const code = error && error.code;
  if (code === 'forbidden' && error.request === 'integrateUser') {
    return 'This server does not allow anonymous users, so the demo cannot name you.\n'
      + 'Restart it with:  mooyaho dev --allow-anonymous\n'
      + '(In production your service server binds users with POST /sessions/:id instead.)';
  }
  if (code === 'channel_not_found') return 'No such channel. Create one with the curl command below and use its id.';
  if (code === 'sfu_unavailable') return `This is an SFU channel, but no SFU node serves it yet, so no media can flow (${error.message}). Check GET /sfu-servers, or use a mesh channel (sfuEnabled: false).`;
  if (code === 'rejected') return `The call was declined${error.message ? `: ${error.message}` : ''}.`;
  if (code === 'disconnected' || code === 'timeout') return `Cannot reach the server (${error.message}).`;
  return `${code ? `[${code}] ` : ''}${error && error.message ? error.message : String(error)}`;
}

function makeTile(container, id, name, stream, { self = false } = {}) {
  let tile = container.querySelector(`[data-session="${CSS.escape(id)}"]`);
  if (!tile) {
    tile = document.createElement('div');
    tile.className = 'tile';
    tile.dataset.session = id;
    tile.innerHTML = '<video autoplay playsinline></video><div class="placeholder">⏸</div><div class="label"><span class="name"></span><span class="flags"></span></div>';
    container.append(tile);
  }
  const video = tile.querySelector('video');
  video.muted = self; // never play our own microphone back
  if (stream && video.srcObject !== stream) video.srcObject = stream;
  tile.querySelector('.name').textContent = name;
  return tile;
}

function setFlags(tile, state) {
  if (!tile) return;
  const flags = [];
  if (state.muted) flags.push('muted');
  if (state.videoOff) flags.push('camera off');
  tile.querySelector('.flags').textContent = flags.join(' · ');
  tile.classList.toggle('video-off', Boolean(state.videoOff));
}

async function camera(mooyaho) {
  try {
    return await mooyaho.createUserMedia({ audio: true, video: { width: 640, height: 480 } });
  } catch (e) {
    banner(`No camera/microphone (${e.message}); you can still watch and chat.`, 'info');
    return null;
  }
}

// ---- channel room --------------------------------------------------------------------------

function channelPage() {
  $('nav-channel').classList.add('active');
  show('join');
  $('channel-id').value = params.get('channel') ?? '';
  $('name').value = params.get('name') ?? `Guest ${Math.floor(Math.random() * 900 + 100)}`;
  $('curl').textContent = `curl -s -X POST ${location.origin}/channels \\\n  -H "Authorization: Bearer $API_KEY" \\\n  -H 'content-type: application/json' \\\n  -d '{"sfuEnabled": false}'`;
  $('join-form').addEventListener('submit', (event) => {
    event.preventDefault();
    join($('channel-id').value.trim(), $('name').value.trim()).catch((e) => banner(explain(e)));
  });
}

async function join(channelId, name) {
  banner('');
  const mooyaho = new Mooyaho({ url: location.origin });
  window.mooyaho = mooyaho; // for the browser tests and the curious
  const tiles = $('tiles');
  const nameOf = (id) => mooyaho.sessions.get(id)?.user?.name ?? id.slice(0, 8);
  const log = (html, cls) => {
    const li = document.createElement('li');
    if (cls) li.className = cls;
    li.append(...html);
    $('messages').append(li);
    $('messages').scrollTop = $('messages').scrollHeight;
  };
  const system = (text) => log([text], 'system');
  const tileOf = (id) => tiles.querySelector(`[data-session="${CSS.escape(id)}"]`);

  mooyaho.addEventListener('error', (e) => banner(explain(e)));
  mooyaho.addEventListener('reconnected', ({ what }) => {
    setStatus('online', true);
    system(what === 'sfu' ? 'media reconnected' : 'reconnected');
    if (what === 'sfu') banner('');
  });
  mooyaho.addEventListener('reconnecting', ({ attempt }) => banner(`The media server changed; reconnecting media (attempt ${attempt})…`, 'info'));
  // SFU channels: the loudest speaker's tile is highlighted (others that speak get a thinner ring).
  // The ranking is kept and applied again to new tiles: on entering it arrives before the tiles.
  let speakers = [];
  const ring = () => {
    for (const tile of tiles.querySelectorAll('.tile')) tile.classList.remove('speaking', 'loudest');
    speakers.forEach(({ sessionId }, rank) => tileOf(sessionId)?.classList.add(rank === 0 ? 'loudest' : 'speaking'));
  };
  mooyaho.addEventListener('activeSpeakersChanged', (event) => {
    speakers = event.speakers;
    ring();
  });
  mooyaho.addEventListener('entered', ({ sessionId, user, isSelf }) => {
    if (isSelf) return;
    makeTile(tiles, sessionId, user?.name ?? sessionId.slice(0, 8), mooyaho.getRemoteStreamById(sessionId));
    ring();
    system(`${user?.name ?? 'someone'} joined`);
  });
  mooyaho.addEventListener('left', ({ sessionId }) => {
    const tile = tileOf(sessionId);
    if (tile) { system(`${tile.querySelector('.name').textContent} left`); tile.remove(); }
  });
  mooyaho.addEventListener('remoteStreamChanged', ({ sessionId }) => {
    const stream = mooyaho.getRemoteStreamById(sessionId);
    if (stream) makeTile(tiles, sessionId, nameOf(sessionId), stream);
    ring();
  });
  mooyaho.addEventListener('updatedMediaState', ({ sessionId }) => {
    const member = mooyaho.sessions.get(sessionId);
    if (member) setFlags(tileOf(sessionId), member.state);
  });
  mooyaho.addEventListener('messaged', ({ sessionId, message, isSelf }) => {
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = isSelf ? 'You' : nameOf(sessionId);
    const text = message.type === 'text' ? message.text : JSON.stringify(message.data);
    log([who, text]);
  });
  mooyaho.addEventListener('channelClosed', () => { banner('The channel was closed.', 'info'); leaveRoom(mooyaho); });

  setStatus('connecting…', false);
  const sessionId = await mooyaho.connect();
  setStatus('online', true);
  const local = await camera(mooyaho);
  try {
    await mooyaho.integrateUser({ id: sessionId, name });
    await mooyaho.enter(channelId);
  } catch (e) {
    mooyaho.dispose();
    setStatus('offline', false);
    throw e;
  }
  history.replaceState(null, '', `/?channel=${encodeURIComponent(channelId)}`);
  show('join', false);
  show('room');
  $('room-name').textContent = `${mooyaho.sfuEnabled ? 'SFU' : 'Mesh'} channel ${channelId}`;
  makeTile(tiles, sessionId, `${name} (you)`, local, { self: true });
  for (const member of mooyaho.sessionsArray) {
    if (member.id === sessionId) continue;
    setFlags(makeTile(tiles, member.id, member.user?.name ?? member.id.slice(0, 8), mooyaho.getRemoteStreamById(member.id)), member.state);
  }
  ring();

  const toggle = (button, key, on, off) => {
    button.onclick = async () => {
      const value = button.getAttribute('aria-pressed') !== 'true';
      try {
        await mooyaho.updateMediaState(key, value);
        button.setAttribute('aria-pressed', String(value));
        button.textContent = value ? on : off;
        setFlags(tileOf(sessionId), mooyaho.sessions.get(sessionId)?.state ?? { [key]: value });
      } catch (e) { banner(explain(e)); }
    };
  };
  toggle($('mute'), 'muted', 'Unmute', 'Mute');
  toggle($('camera'), 'videoOff', 'Camera on', 'Camera off');
  $('leave').onclick = async () => { await mooyaho.leave().catch(() => undefined); leaveRoom(mooyaho); };
  $('chat-form').onsubmit = async (event) => {
    event.preventDefault();
    const text = $('chat-input').value.trim();
    if (!text) return;
    try { await mooyaho.sendMessage(text); $('chat-input').value = ''; } catch (e) { banner(explain(e)); }
  };
}

function leaveRoom(mooyaho) {
  mooyaho.dispose();
  setStatus('offline', false);
  $('tiles').replaceChildren();
  $('messages').replaceChildren();
  show('room', false);
  show('join');
}

// ---- direct call ---------------------------------------------------------------------------

async function callPage() {
  $('nav-call').classList.add('active');
  show('call');
  const mooyaho = new Mooyaho({ url: location.origin, allowDirectCall: true });
  window.mooyaho = mooyaho;
  const tiles = $('call-tiles');
  const state = (text) => { $('call-state').textContent = text; };
  let peer = null;
  const inCall = (id) => { peer = id; show('hangup', Boolean(id)); };

  mooyaho.addEventListener('error', (e) => banner(explain(e)));
  mooyaho.addEventListener('remoteStreamChanged', ({ sessionId }) => {
    const stream = mooyaho.getRemoteStreamById(sessionId);
    if (stream) makeTile(tiles, sessionId, sessionId.slice(0, 8), stream);
    else tiles.querySelector(`[data-session="${CSS.escape(sessionId)}"]`)?.remove();
  });
  mooyaho.addEventListener('peerConnected', ({ sessionId }) => state(`Connected with ${sessionId}`));
  mooyaho.addEventListener('peerDisconnected', ({ sessionId }) => { state(`Call with ${sessionId} ended`); inCall(null); });
  mooyaho.addEventListener('incomingCall', (call) => {
    const dialog = $('incoming');
    $('caller').textContent = call.sessionId;
    $('accept').onclick = async () => {
      dialog.close();
      try { await camera(mooyaho); await call.accept(); inCall(call.sessionId); state(`Talking with ${call.sessionId}`); } catch (e) { banner(explain(e)); }
    };
    $('decline').onclick = () => { dialog.close(); call.reject('declined'); state(`Declined ${call.sessionId}`); };
    dialog.showModal();
  });

  setStatus('connecting…', false);
  try {
    const id = await mooyaho.connect();
    setStatus('online', true);
    $('my-id').textContent = id;
    $('copy-id').onclick = () => navigator.clipboard?.writeText(id);
  } catch (e) { banner(explain(e)); return; }
  const local = await camera(mooyaho);
  makeTile(tiles, 'self', 'You', local, { self: true });

  $('call-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const callee = $('callee').value.trim();
    state(`Calling ${callee}…`);
    inCall(callee);
    try {
      await mooyaho.directCall(callee);
      state(`Talking with ${callee}`);
    } catch (e) {
      inCall(null);
      state('');
      banner(explain(e));
    }
  });
  $('hangup').onclick = () => { if (peer) mooyaho.hangUp(peer); inCall(null); state('Hung up'); };
}

if (callMode) callPage(); else channelPage();
