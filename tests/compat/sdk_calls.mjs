// Huddle01's official server SDK (npm @huddle01/server-sdk, pinned in
// package.json) run call by call against a livesessions server, as a Huddle01
// user moving an app here would run it. tests/e2e/test_sdk_compat.py runs one
// scenario per process and asserts on what it prints.
//
//   LIVESESSIONS_URL=http://127.0.0.1:8080 LIVESESSIONS_API_KEY=lsk_… node sdk_calls.mjs <scenario>
//
// Prints one JSON line per call:
//   {"call": "<label>", "ok": true, "type": "<typeof result>", "result": …, "requests": [...]}
//   {"call": "<label>", "ok": false, "error": "<what the SDK threw>", "requests": [...]}
// `requests` are the HTTP requests the call made: method, the Huddle01 URL the
// SDK asked for (before it was rewritten) and the status this service answered.
// A scenario that cannot go on (a peer that cannot join, say) exits non-zero
// with a message on stderr.

import { API } from '@huddle01/server-sdk/api';
import { AccessToken, DEFAULT_PERMISSIONS, ROLE_PERMISSIONS, Role, TokenVerifier } from '@huddle01/server-sdk/auth';
import { Recorder } from '@huddle01/server-sdk/recorder';
import { createRemoteJWKSet, decodeJwt } from 'jose';
import WebSocket from 'ws';

const BASE = process.env.LIVESESSIONS_URL;
const KEY = process.env.LIVESESSIONS_API_KEY;
if (!BASE || !KEY) {
  console.error('sdk_calls.mjs: set LIVESESSIONS_URL and LIVESESSIONS_API_KEY');
  process.exit(2);
}
const WS_BASE = BASE.replace(/^http/, 'ws');

// The SDK's typed client (every route it knows). The package's exports map
// does not list it, so it is imported by path.
const { getInfraClient } = await import(
  new URL('./node_modules/@huddle01/server-sdk/dist/client.js', import.meta.url)
);

// The one line a user adds (README, "Using Huddle01's server SDK"): the SDK's
// two hard-coded Huddle01 hosts are sent to this service instead.
const huddleFetch = globalThis.fetch;
globalThis.fetch = (url, init) =>
  huddleFetch(String(url).replace(/^https:\/\/(infra-api\.huddle01\.workers\.dev|apira\.huddle01\.media)/, BASE), init);

// Around it, for the report only: which requests each call made.
let requests = [];
const rewritingFetch = globalThis.fetch;
globalThis.fetch = async (url, init) => {
  const entry = { method: init?.method ?? 'GET', url: String(url), status: null };
  requests.push(entry);
  const response = await rewritingFetch(url, init);
  entry.status = response.status;
  return response;
};

// An Error (API.getRecordings returns one in `error`) is printed as its message.
const errorsAsText = (_key, value) => (value instanceof Error ? { error: value.message } : value);

function emit(line) {
  process.stdout.write(JSON.stringify(line, errorsAsText) + '\n');
}

/** Run one SDK call and print its line; the result (undefined when it threw). */
async function call(label, fn) {
  requests = [];
  let line;
  let result;
  try {
    result = await fn();
    line = { call: label, ok: true, type: typeof result, result: result === undefined ? null : result };
  } catch (error) {
    line = { call: label, ok: false, error: String(error?.message ?? error) };
  }
  line.requests = requests;
  emit(line);
  return result;
}

/** A typed-client request: its status and JSON body (or text). */
async function route(label, fn) {
  return call(label, async () => {
    const response = await fn();
    const text = await response.text();
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
    return { status: response.status, body };
  });
}

function fail(message) {
  console.error(`sdk_calls.mjs: ${message}`);
  process.exit(1);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// --- peers: the service's own /ws (Huddle01 peers use its client SDK) --------

/** Open /ws with a token: {ws, joined} once joined, or {closed: {code, reason}}. */
function join(token, { origin } = {}) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${WS_BASE}/ws?token=${encodeURIComponent(token)}`, origin ? { origin } : {});
    const timer = setTimeout(() => {
      ws.terminate();
      resolve({ closed: { code: null, reason: 'no answer in 10 s' } });
    }, 10_000);
    ws.once('message', (data) => {
      clearTimeout(timer);
      resolve({ ws, joined: JSON.parse(String(data)) });
    });
    ws.once('close', (code, reason) => {
      clearTimeout(timer);
      resolve({ closed: { code, reason: String(reason) } });
    });
    ws.on('error', () => {});
  });
}

/** join(), printed as a call: the joined message or the close code. */
async function joinCall(label, token, options) {
  let peer;
  await call(label, async () => {
    peer = await join(token, options);
    return peer.joined ? { joined: peer.joined } : { closed: peer.closed };
  });
  return peer;
}

async function mustJoin(token, options) {
  const peer = await join(token, options);
  if (!peer.joined || peer.joined.type !== 'joined') fail(`a peer could not join: ${JSON.stringify(peer)}`);
  return peer;
}

/** Leave and wait for the server to close the socket. */
function leave(peer) {
  return new Promise((resolve) => {
    if (peer.ws.readyState === WebSocket.CLOSED) return resolve();
    peer.ws.once('close', () => resolve());
    peer.ws.send(JSON.stringify({ type: 'leave' }));
  });
}

/** Poll until check() gives something truthy (at most `seconds`). */
async function until(what, check, seconds = 15) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) fail(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

// --- helpers over the SDK ------------------------------------------------------

const api = new API({ apiKey: KEY });
const client = getInfraClient({ apiKey: KEY });

async function newRoom(data) {
  const { roomId } = await api.createRoom(data);
  if (!roomId) fail('createRoom gave no roomId');
  return roomId;
}

async function tokenFor(roomId, role = Role.HOST, options) {
  const token = await new AccessToken({ apiKey: KEY, roomId, role, options }).toJwt();
  if (typeof token !== 'string') fail(`toJwt gave ${typeof token} for role ${role}`);
  return token;
}

/** The claims of a JWT (not verified: TokenVerifier does that). */
function claims(token) {
  return typeof token === 'string' ? decodeJwt(token) : null;
}

// --- scenarios ----------------------------------------------------------------

const scenarios = {
  /** API: createRoom, getRooms, getRoomDetails. */
  async rooms() {
    const first = await call('API.createRoom(metadata, roomLocked:false)', () =>
      api.createRoom({ metadata: JSON.stringify({ title: 'Standup' }), roomLocked: false }),
    );
    const locked = await call('API.createRoom(roomLocked:true)', () => api.createRoom({ roomLocked: true }));
    const bare = await call('API.createRoom()', () => api.createRoom());
    emit({ call: 'rooms', ok: true, result: { first: first?.roomId, locked: locked?.roomId, bare: bare?.roomId } });
    await call('API.getRooms()', () => api.getRooms());
    await call('API.getRooms(limit:2,cursor:1)', () => api.getRooms({ limit: 2, cursor: 1 }));
    await call('API.getRooms(limit:2,cursor:2)', () => api.getRooms({ limit: 2, cursor: 2 }));
    await call('API.getRooms(limit:2,cursor:0)', () => api.getRooms({ limit: 2, cursor: 0 }));
    await call('API.getRoomDetails(room)', () => api.getRoomDetails({ roomId: first.roomId }));
    await call('API.getRoomDetails(locked)', () => api.getRoomDetails({ roomId: locked.roomId }));
    await call('API.getRoomDetails(unknown)', () => api.getRoomDetails({ roomId: 'zzz-zzzz-zzz' }));
  },

  /** API: getLiveSessions (all, one room), getLivePartipantsDetails. */
  async live() {
    const roomId = await newRoom();
    const idle = await newRoom();
    const token = await tokenFor(roomId, Role.HOST, { metadata: { displayName: 'Ada' } });
    const peer = await mustJoin(token);
    emit({ call: 'peer', ok: true, result: { roomId, idle, joined: peer.joined } });
    await call('API.getLiveSessions()', () => api.getLiveSessions());
    await call('API.getLiveSessions(roomId)', () => api.getLiveSessions({ roomId }));
    await call('API.getLivePartipantsDetails(roomId)', () => api.getLivePartipantsDetails({ roomId }));
    await call('API.getLiveSessions(idle)', () => api.getLiveSessions({ roomId: idle }));
    await call('API.getLivePartipantsDetails(idle)', () => api.getLivePartipantsDetails({ roomId: idle }));
    await leave(peer);
    await call('API.getLiveSessions() after leaving', () => api.getLiveSessions());
  },

  /** API: getRoomSessions, getPartipantsDetails, getMetrics, getRecordings, after a session. */
  async history() {
    const roomId = await newRoom();
    const host = await mustJoin(await tokenFor(roomId, Role.HOST, { metadata: { displayName: 'Ada' } }));
    const listener = await mustJoin(await tokenFor(roomId, Role.LISTENER));
    const sessionId = host.joined.sessionId;
    await leave(listener);
    await leave(host);
    // The session ends once the grace period is over.
    await until('the session to end', async () => {
      const sessions = await api.getRoomSessions({ roomId });
      return sessions.length === 1 && sessions[0].endTime !== null;
    });
    emit({ call: 'session', ok: true, result: { roomId, sessionId, peers: [host.joined.peerId, listener.joined.peerId] } });
    await call('API.getRoomSessions(roomId)', () => api.getRoomSessions({ roomId }));
    await call('API.getRoomSessions(roomId,limit:5)', () => api.getRoomSessions({ roomId, limit: 5 }));
    await call('API.getRoomSessions(roomId,cursor:0)', () => api.getRoomSessions({ roomId, cursor: 0 }));
    await call('API.getRoomSessions(unknown)', () => api.getRoomSessions({ roomId: 'zzz-zzzz-zzz' }));
    await call('API.getPartipantsDetails(sessionId)', () => api.getPartipantsDetails({ sessionId }));
    await call('API.getPartipantsDetails(unknown)', () => api.getPartipantsDetails({ sessionId: 'ses_0000' }));
    await call('API.getMetrics()', () => api.getMetrics());
    await call('API.getRecordings()', () => api.getRecordings());
    await call('API.getRecordings(sessionId)', () => api.getRecordings({ sessionId, limit: 5 }));
    await call('API.getRecordings(sessionId,cursor:0)', () => api.getRecordings({ sessionId, cursor: 0 }));
  },

  /** AccessToken: every built-in role, partial permissions, metadata, maxPeersAllowed, TokenVerifier. */
  async tokens() {
    emit({ call: 'sdk', ok: true, result: { ROLE_PERMISSIONS, DEFAULT_PERMISSIONS, roles: Object.values(Role) } });
    const roomId = await newRoom();
    for (const role of Object.values(Role)) {
      const token = await call(`AccessToken(${role}).toJwt()`, () =>
        new AccessToken({ apiKey: KEY, roomId, role }).toJwt(),
      );
      emit({ call: `claims(${role})`, ok: true, result: claims(token) });
      const peer = await joinCall(`join(${role})`, token);
      if (peer?.joined) await leave(peer);
    }
    const partial = { canSendData: false, canProduceSources: { cam: false, mic: true, screen: false } };
    const listenerToken = await call('AccessToken(listener, permissions).toJwt()', () =>
      new AccessToken({ apiKey: KEY, roomId, role: Role.LISTENER, permissions: partial }).toJwt(),
    );
    emit({ call: 'claims(listener, permissions)', ok: true, result: claims(listenerToken) });
    const onlyPermissions = await call('AccessToken(permissions only).toJwt()', () =>
      new AccessToken({ apiKey: KEY, roomId, permissions: { admin: true } }).toJwt(),
    );
    emit({ call: 'claims(permissions only)', ok: true, result: claims(onlyPermissions) });
    const peer = await joinCall('join(permissions only)', onlyPermissions);
    if (peer?.joined) await leave(peer);

    // options.metadata (an object: the SDK sends it JSON-encoded) and maxPeersAllowed.
    const small = await newRoom();
    const options = { metadata: { displayName: 'Ada', avatar: 'ada.png' }, maxPeersAllowed: 1 };
    const first = await call('AccessToken(guest, options).toJwt()', () =>
      new AccessToken({ apiKey: KEY, roomId: small, role: Role.GUEST, options }).toJwt(),
    );
    emit({ call: 'claims(guest, options)', ok: true, result: claims(first) });
    const inside = await joinCall('join(guest, options)', first);
    const second = await tokenFor(small, Role.GUEST, options);
    const refused = await joinCall('join(guest, options) when full', second);
    if (refused?.joined) await leave(refused);
    await call('API.getLivePartipantsDetails(small room)', () => api.getLivePartipantsDetails({ roomId: small }));
    if (inside?.joined) await leave(inside);

    // The setters change what the next toJwt() sends.
    const updated = new AccessToken({ apiKey: KEY, roomId, role: Role.GUEST });
    updated.updatePermissions = { ...ROLE_PERMISSIONS.listener, canSendData: false };
    updated.updateMetaData = { displayName: 'Grace' };
    const updatedToken = await call('AccessToken(guest, updated).toJwt()', () => updated.toJwt());
    emit({ call: 'claims(guest, updated)', ok: true, result: claims(updatedToken) });

    // TokenVerifier checks against Huddle01's keys; point it at this service's.
    const verifier = new TokenVerifier();
    verifier.JWKS = createRemoteJWKSet(new URL(`${BASE}/jwks.json`));
    await call('TokenVerifier.verify(token)', () => verifier.verify(first));
    const [head, body, signature] = first.split('.');
    const forged = Buffer.from(JSON.stringify({ ...claims(first), role: 'host' })).toString('base64url');
    await call('TokenVerifier.verify(forged)', () => verifier.verify([head, forged, signature].join('.')));
    await call('TokenVerifier.verify(intact again)', () => verifier.verify([head, body, signature].join('.')));

    await call('AccessToken(unknown room).toJwt()', () =>
      new AccessToken({ apiKey: KEY, roomId: 'zzz-zzzz-zzz', role: Role.HOST }).toJwt(),
    );
  },

  /** AccessToken with a custom role (the SDK allows any name of 1-20 characters, with permissions). */
  async 'custom-role'() {
    const roomId = await newRoom();
    const permissions = { admin: true, canProduce: false, canProduceSources: { cam: false, mic: false, screen: true } };
    const token = await call('AccessToken(moderator).toJwt()', () =>
      new AccessToken({ apiKey: KEY, roomId, role: 'moderator', permissions }).toJwt(),
    );
    emit({ call: 'sdk', ok: true, result: { DEFAULT_PERMISSIONS, permissions } });
    emit({ call: 'claims(moderator)', ok: true, result: claims(token) });
    const peer = await joinCall('join(moderator)', token);
    const twenty = 'r'.repeat(20);
    const long = await call('AccessToken(20-character role).toJwt()', () =>
      new AccessToken({ apiKey: KEY, roomId, role: twenty, permissions: { canSendData: false } }).toJwt(),
    );
    emit({ call: 'claims(20-character role)', ok: true, result: claims(long) });
    await call('AccessToken(21-character role)', () =>
      new AccessToken({ apiKey: KEY, roomId, role: `${twenty}r`, permissions: {} }).toJwt(),
    );
    if (peer?.joined) await leave(peer);
  },

  /** create-peer-token without `permissions` (plain HTTP callers): the SDK's ROLE_PERMISSIONS exactly. */
  async 'role-defaults'() {
    emit({ call: 'sdk', ok: true, result: { ROLE_PERMISSIONS } });
    const roomId = await newRoom();
    for (const role of Object.values(Role)) {
      const answer = await route(`POST create-peer-token(${role}, no permissions)`, () =>
        client.api.v2.sdk['create-peer-token'].$post({ json: { roomId, role } }),
      );
      emit({ call: `claims(${role})`, ok: true, result: claims(answer?.body?.token) });
    }
  },

  /** Recorder: startRecording, startLivestream, getRecordingStatus, stop, getRecordings. */
  async recorder() {
    const recorder = new Recorder('prj_ignored', KEY);
    const roomId = await newRoom();
    const idle = await newRoom();
    const token = await tokenFor(roomId);
    const peer = await mustJoin(token);
    const sessionId = peer.joined.sessionId;
    emit({ call: 'session', ok: true, result: { roomId, sessionId } });
    await call('Recorder.getRecordingStatus() idle', () => recorder.getRecordingStatus({ roomId }));
    // Options for Huddle01's media pipeline are accepted and have no effect here.
    const extras = {
      layout: 'spotlight',
      customLayoutUrl: 'https://example.com/layout',
      watermark: { url: 'https://example.com/mark.png', position: 'top-left' },
      pinToIpfs: false,
      options: { videoOnly: true },
    };
    await call('Recorder.startRecording()', () => recorder.startRecording({ roomId, token, ...extras }));
    await call('Recorder.getRecordingStatus() recording', () => recorder.getRecordingStatus({ roomId }));
    await call('API.getLiveSessions(roomId) recording', () => api.getLiveSessions({ roomId }));
    await call('Recorder.stop() recording', () => recorder.stop({ roomId }));
    await call('Recorder.getRecordingStatus() after recording', () => recorder.getRecordingStatus({ roomId }));
    const rtmpUrls = ['rtmp://a.rtmp.youtube.com/live2/xxxx-xxxx'];
    const customStorage = { s3: { accessKey: 'AKIA…', secret: 'not-sent-anywhere', region: 'eu-west-1', bucket: 'b' } };
    await call('Recorder.startLivestream()', () =>
      recorder.startLivestream({ roomId, token, rtmpUrls, customStorage, recordLivestream: true }),
    );
    await call('Recorder.getRecordingStatus() livestream', () => recorder.getRecordingStatus({ roomId }));
    await call('Recorder.stop() livestream', () => recorder.stop({ roomId }));
    await call('Recorder.getRecordingStatus() after livestream', () => recorder.getRecordingStatus({ roomId }));
    await call('API.getLiveSessions(roomId) after both', () => api.getLiveSessions({ roomId }));
    await call('Recorder.stop() nothing running', () => recorder.stop({ roomId }));
    const idleToken = await tokenFor(idle);
    await call('Recorder.startRecording() room not live', () => recorder.startRecording({ roomId: idle, token: idleToken }));
    await call('Recorder.startRecording() bad token', () => recorder.startRecording({ roomId, token: 'not-a-token' }));
    await call('Recorder.getRecordings()', () => recorder.getRecordings());
    await call('Recorder.getRecordings(sessionId)', () => recorder.getRecordings({ sessionId }));
    await call('API.getRecordings(sessionId)', () => api.getRecordings({ sessionId }));
    await leave(peer);
  },

  /** Recorder.stop({roomId}) while a recording and a livestream both run. */
  async 'recorder-both'() {
    const recorder = new Recorder('prj_ignored', KEY);
    const roomId = await newRoom();
    const token = await tokenFor(roomId);
    const peer = await mustJoin(token);
    await call('Recorder.startRecording()', () => recorder.startRecording({ roomId, token }));
    await call('Recorder.startLivestream()', () => recorder.startLivestream({ roomId, token, rtmpUrls: [] }));
    await call('Recorder.getRecordingStatus() both', () => recorder.getRecordingStatus({ roomId }));
    await call('Recorder.stop() both', () => recorder.stop({ roomId }));
    await call('Recorder.getRecordingStatus() after stop', () => recorder.getRecordingStatus({ roomId }));
    await leave(peer);
  },

  /** Routes of the typed client that no SDK method calls. */
  async client() {
    const roomId = await newRoom({ metadata: JSON.stringify({ title: 'Standup' }) });
    const peer = await mustJoin(await tokenFor(roomId));
    const sessionId = peer.joined.sessionId;
    await leave(peer);
    emit({ call: 'session', ok: true, result: { roomId, sessionId, peerId: peer.joined.peerId } });
    const sdk = client.api.v2.sdk;
    await route('GET /api/v2/sdk', () => sdk.$get());
    await route('GET rooms/metadata/:roomId', () => sdk.rooms.metadata[':roomId'].$get({ param: { roomId } }));
    await route('POST rooms/metadata/:roomId', () =>
      sdk.rooms.metadata[':roomId'].$post({ param: { roomId }, json: { metadata: JSON.stringify({ title: 'Retro' }) } }),
    );
    await route('GET rooms/metadata?roomId', () => sdk.rooms.metadata.$get({ query: { roomId } }));
    await route('POST rooms/metadata?roomId', () =>
      sdk.rooms.metadata.$post({ query: { roomId }, json: { metadata: JSON.stringify({ title: 'Demo' }) } }),
    );
    await route('GET rooms/metadata/:roomId unknown', () =>
      sdk.rooms.metadata[':roomId'].$get({ param: { roomId: 'zzz-zzzz-zzz' } }),
    );
    await route('GET validate-room', () => sdk['validate-room'].$get({ query: { roomId } }));
    await route('GET validate-room unknown', () => sdk['validate-room'].$get({ query: { roomId: 'zzz-zzzz-zzz' } }));
    await route('GET rooms/participant-list', () => sdk.rooms['participant-list'].$get({ query: { sessionId } }));
    await route('GET rooms/participant-lists', () => sdk.rooms['participant-lists'].$get({ query: { sessionId } }));
    const answer = await route('POST create-peer-token', () =>
      sdk['create-peer-token'].$post({
        json: { roomId, role: 'speaker', permissions: ROLE_PERMISSIONS.speaker, metadata: '{"n":1}', options: { maxPeersAllowed: 5 } },
      }),
    );
    emit({ call: 'claims(create-peer-token)', ok: true, result: claims(answer?.body?.token) });
    await route('POST create-peer-token unknown room', () =>
      sdk['create-peer-token'].$post({ json: { roomId: 'zzz-zzzz-zzz', role: 'host', permissions: ROLE_PERMISSIONS.host } }),
    );
    await route('POST create-guest-token', () => sdk['create-guest-token'].$post({ json: { data: { guestType: 'guest' } } }));
  },

  /** POST /api/v2/sdk/join-room-token (typed client only). */
  async 'join-room-token'() {
    emit({ call: 'sdk', ok: true, result: { ROLE_PERMISSIONS } });
    const roomId = await newRoom();
    const sdk = client.api.v2.sdk;
    const variants = {
      plain: { roomId },
      host: { roomId, userType: 'host', displayName: 'Ada', avatarUrl: 'https://example.com/ada.png' },
      guest: { roomId, userType: 'guest', displayName: 'Grace' },
      guestAsHost: { roomId, userType: 'guest', guestAsHost: true, displayName: 'Linus' },
    };
    for (const [name, json] of Object.entries(variants)) {
      const before = Math.floor(Date.now() / 1000);
      const answer = await route(`POST join-room-token(${name})`, () => sdk['join-room-token'].$post({ json }));
      emit({ call: `claims(${name})`, ok: true, result: { claims: claims(answer?.body?.token), before } });
      if (typeof answer?.body?.token === 'string') {
        const peer = await joinCall(`join(${name})`, answer.body.token);
        if (peer?.joined) await leave(peer);
      }
    }
    await route('POST join-room-token unknown room', () => sdk['join-room-token'].$post({ json: { roomId: 'zzz-zzzz-zzz' } }));
    await route('POST join-room-token no roomId', () => sdk['join-room-token'].$post({ json: { displayName: 'Ada' } }));
  },

  /** GET /api/v2/sdk/get-whitelisted-domains and browser joins (Origin) against it. */
  async whitelist() {
    await route('GET get-whitelisted-domains', () => client.api.v2.sdk['get-whitelisted-domains'].$get());
    const roomId = await newRoom();
    for (const [name, origin] of [
      ['no Origin', undefined],
      ['allowed Origin', process.env.ALLOWED_ORIGIN],
      ['other Origin', 'https://elsewhere.example.org'],
    ]) {
      if (name === 'allowed Origin' && !origin) continue;
      const peer = await joinCall(`join(${name})`, await tokenFor(roomId), { origin });
      if (peer?.joined) await leave(peer);
    }
  },

  /** Every class with a wrong API key. */
  async 'wrong-key'() {
    const wrong = 'lsk_' + 'x'.repeat(43);
    const badApi = new API({ apiKey: wrong });
    const recorder = new Recorder('prj_ignored', wrong);
    const roomId = await newRoom();
    await call('API.createRoom()', () => badApi.createRoom());
    await call('API.getRooms()', () => badApi.getRooms());
    await call('API.getLiveSessions()', () => badApi.getLiveSessions());
    await call('API.getMetrics()', () => badApi.getMetrics());
    await call('API.getRoomDetails()', () => badApi.getRoomDetails({ roomId }));
    await call('API.getRecordings()', () => badApi.getRecordings());
    await call('AccessToken.toJwt()', () => new AccessToken({ apiKey: wrong, roomId, role: Role.HOST }).toJwt());
    await call('Recorder.getRecordingStatus()', () => recorder.getRecordingStatus({ roomId }));
    await call('Recorder.stop()', () => recorder.stop({ roomId }));
    await call('Recorder.getRecordings()', () => recorder.getRecordings());
  },
};

const name = process.argv[2];
if (!(name in scenarios)) fail(`unknown scenario ${JSON.stringify(name)}; one of: ${Object.keys(scenarios).join(', ')}`);
await scenarios[name]();
// Open sockets and keep-alive connections must not keep the process up.
process.exit(0);
