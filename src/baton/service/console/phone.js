// The console's browser phone: a small SIP-over-WebSocket user agent (RFC 7118) with WebRTC
// media, so a dispatcher's headset can be the position's phone. Written here rather than
// bundling JsSIP or SIP.js: the console has no build step and fetches nothing from other
// hosts, and a position needs only a few things — register (digest MD5), take calls Baton
// sends (ring, answer, decline), dial a number (INVITE with digest, CANCEL), hang up, answer
// re-INVITEs (hold, refresh), send key presses (RFC 4733 through RTCDTMFSender) — which is a
// few hundred lines. docs/sip.md ("WebRTC") describes the server side, docs/service.md ("The
// console") the dispatcher's side.
"use strict";

const BatonPhone = (() => {
  // ---------------------------------------------------------------- MD5 (RFC 1321), for digest
  function md5(text) {
    const bytes = new TextEncoder().encode(text);
    const n = ((bytes.length + 8) >>> 6) + 1;
    const w = new Uint32Array(n * 16);
    for (let i = 0; i < bytes.length; i++) w[i >> 2] |= bytes[i] << ((i % 4) * 8);
    w[bytes.length >> 2] |= 0x80 << ((bytes.length % 4) * 8);
    w[n * 16 - 2] = bytes.length * 8;
    const S = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
    const K = Array.from({ length: 64 }, (_, i) => Math.floor(Math.abs(Math.sin(i + 1)) * 2 ** 32) >>> 0);
    let [a0, b0, c0, d0] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
    for (let blk = 0; blk < n * 16; blk += 16) {
      let [a, b, c, d] = [a0, b0, c0, d0];
      for (let i = 0; i < 64; i++) {
        let f, g;
        if (i < 16) { f = (b & c) | (~b & d); g = i; }
        else if (i < 32) { f = (d & b) | (~d & c); g = (5 * i + 1) % 16; }
        else if (i < 48) { f = b ^ c ^ d; g = (3 * i + 5) % 16; }
        else { f = c ^ (b | ~d); g = (7 * i) % 16; }
        const s = S[(i >> 4) * 4 + (i % 4)];
        const x = (a + f + K[i] + w[blk + g]) >>> 0;
        [a, d, c] = [d, c, b];
        b = (b + ((x << s) | (x >>> (32 - s)))) >>> 0;
      }
      a0 = (a0 + a) >>> 0; b0 = (b0 + b) >>> 0; c0 = (c0 + c) >>> 0; d0 = (d0 + d) >>> 0;
    }
    return [a0, b0, c0, d0].map((v) => Array.from({ length: 4 }, (_, i) =>
      ((v >>> (i * 8)) & 0xff).toString(16).padStart(2, "0")).join("")).join("");
  }

  // ---------------------------------------------------------------- SIP messages
  const rand = (n) => Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, "0")).join("");

  function parse(text) {
    const cut = text.indexOf("\r\n\r\n");
    const head = (cut < 0 ? text : text.slice(0, cut)).split("\r\n");
    const body = cut < 0 ? "" : text.slice(cut + 4);
    const first = head.shift();
    const headers = [];
    for (const line of head) {
      const i = line.indexOf(":");
      if (i > 0) headers.push([line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim()]);
    }
    const get = (name) => { const h = headers.find(([k]) => k === name); return h ? h[1] : null; };
    const all = (name) => headers.filter(([k]) => k === name).map(([, v]) => v);
    if (first.startsWith("SIP/2.0 ")) {
      return { status: parseInt(first.split(" ")[1], 10), reason: first.split(" ").slice(2).join(" "),
             headers, get, all, body };
    }
    const [method, uri] = first.split(" ");
    return { method, uri, headers, get, all, body };
  }

  // ---------------------------------------------------------------- the user agent
  const P = {
    state: "off", detail: "", ws: null, user: "", password: "", domain: "", url: "",
    mic: null, pc: null, call: null, cseq: 1, onchange: () => {}, analyser: null,
    instance: rand(6), regCallId: rand(8), regTag: rand(4), regTimer: null,
  };

  function set(state, detail = "") { P.state = state; P.detail = detail; P.onchange(state, detail); }

  function send(text) { if (P.ws && P.ws.readyState === 1) P.ws.send(text); }

  function contact() { return `<sip:${P.instance}@${P.instance}.invalid;transport=ws>`; }

  // Sends a request; returns its Via branch (a CANCEL, and the ACK of a failed INVITE, reuse it).
  function request(method, uri, lines, body = "", branch = `z9hG4bK${rand(8)}`) {
    const all = [`${method} ${uri} SIP/2.0`, `Via: SIP/2.0/WSS ${P.instance}.invalid;branch=${branch}`,
                 "Max-Forwards: 70", ...lines];
    if (body) all.push("Content-Type: application/sdp");
    all.push(`Content-Length: ${new TextEncoder().encode(body).length}`);
    send(all.join("\r\n") + "\r\n\r\n" + body);
    return branch;
  }

  function respond(req, status, reason, extra = [], body = "") {
    const lines = [`SIP/2.0 ${status} ${reason}`];
    for (const v of req.all("via")) lines.push(`Via: ${v}`);
    lines.push(`From: ${req.get("from")}`);
    let to = req.get("to");
    if (P.call && req.get("call-id") === P.call.callId && !/;tag=/.test(to)) to += `;tag=${P.call.tag}`;
    lines.push(`To: ${to}`, `Call-ID: ${req.get("call-id")}`, `CSeq: ${req.get("cseq")}`, ...extra);
    if (body) lines.push("Content-Type: application/sdp");
    lines.push(`Content-Length: ${new TextEncoder().encode(body).length}`);
    send(lines.join("\r\n") + "\r\n\r\n" + body);
  }

  function authorization(res, method, uri) {
    const value = res.get("www-authenticate") || res.get("proxy-authenticate") || "";
    const param = (k) => { const m = value.match(new RegExp(`${k}="?([^",]+)"?`, "i")); return m ? m[1] : null; };
    const realm = param("realm"), nonce = param("nonce"), opaque = param("opaque");
    const qop = /qop="?[^"]*auth/i.test(value) ? "auth" : null;
    const ha1 = md5(`${P.user}:${realm}:${P.password}`), ha2 = md5(`${method}:${uri}`);
    const cnonce = rand(8), nc = "00000001";
    const response = qop ? md5(`${ha1}:${nonce}:${nc}:${cnonce}:${qop}:${ha2}`) : md5(`${ha1}:${nonce}:${ha2}`);
    let h = `Digest username="${P.user}", realm="${realm}", nonce="${nonce}", uri="${uri}", response="${response}", algorithm=MD5`;
    if (opaque) h += `, opaque="${opaque}"`;
    if (qop) h += `, qop=${qop}, nc=${nc}, cnonce="${cnonce}"`;
    return `${res.status === 407 ? "Proxy-Authorization" : "Authorization"}: ${h}`;
  }

  function register(auth = null, expires = 600) {
    const uri = `sip:${P.domain}`;
    request("REGISTER", uri, [
      `From: <sip:${P.user}@${P.domain}>;tag=${P.regTag}`, `To: <sip:${P.user}@${P.domain}>`,
      `Call-ID: ${P.regCallId}`, `CSeq: ${P.cseq++} REGISTER`, `Contact: ${contact()};expires=${expires}`,
      "User-Agent: Baton console", ...(auth ? [auth] : []),
    ]);
  }

  async function start({ url, domain, user, password }) {
    Object.assign(P, { url, domain, user, password });
    set("asking", "allow the microphone to use this browser as your phone");
    try {
      await useMic(P.deviceId);
    } catch (e) {
      set("no-mic", "microphone refused: allow it for this page in the browser, then try again");
      return;
    }
    set("connecting", url);
    P.ws = new WebSocket(url, "sip");
    P.ws.onopen = () => register();
    P.ws.onmessage = (ev) => onMessage(parse(typeof ev.data === "string" ? ev.data : ""));
    P.ws.onclose = () => { if (P.state !== "off") set("failed", "connection to Baton lost"); teardown(); };
  }

  // The headset: which microphone (remembered in the page), and its level for the meter.
  async function useMic(deviceId) {
    const audio = deviceId ? { deviceId: { exact: deviceId } } : true;
    const mic = await navigator.mediaDevices.getUserMedia({ audio, video: false });
    if (P.mic) P.mic.getTracks().forEach((t) => t.stop());
    P.mic = mic;
    P.deviceId = deviceId || null;
    const ctx = P.micCtx || (P.micCtx = new AudioContext());
    P.micLevel = ctx.createAnalyser();
    P.micLevel.fftSize = 1024;
    ctx.createMediaStreamSource(mic).connect(P.micLevel);
    if (P.pc) {  // in a call: the new microphone replaces the old one at once
      const sender = P.pc.getSenders().find((s) => s.track && s.track.kind === "audio");
      if (sender) await sender.replaceTrack(mic.getAudioTracks()[0]);
    }
  }

  async function microphones() {
    const all = await navigator.mediaDevices.enumerateDevices();
    return all.filter((d) => d.kind === "audioinput").map((d, i) => ({ id: d.deviceId, label: d.label || `microphone ${i + 1}` }));
  }

  function level() {  // 0..1, the microphone's RMS now
    if (!P.micLevel) return 0;
    const x = new Float32Array(P.micLevel.fftSize);
    P.micLevel.getFloatTimeDomainData(x);
    let sum = 0;
    for (const v of x) sum += v * v;
    return Math.min(1, Math.sqrt(sum / x.length) * 4);
  }

  function stop() {
    if (P.ws && P.ws.readyState === 1 && P.state !== "failed") register(null, 0);
    if (P.call) hangup();
    set("off");
    clearInterval(P.regTimer);
    setTimeout(() => { if (P.ws) { P.ws.onclose = null; P.ws.close(); P.ws = null; } }, 200);
    if (P.mic) { P.mic.getTracks().forEach((t) => t.stop()); P.mic = null; }
  }

  function onMessage(m) {
    if (m.status !== undefined) return onResponse(m);
    const callId = m.get("call-id");
    if (m.method === "INVITE") return onInvite(m);
    if (m.method === "ACK") return;
    if (m.method === "BYE") { respond(m, 200, "OK"); if (P.call && P.call.callId === callId) { teardown(); set("ready"); } return; }
    if (m.method === "CANCEL") {
      respond(m, 200, "OK");
      if (P.call && P.call.callId === callId && !P.call.answered) { respond(P.call.invite, 487, "Request Terminated"); teardown(); set("ready"); }
      return;
    }
    respond(m, 200, "OK");  // OPTIONS, INFO, UPDATE without SDP
  }

  function onResponse(m) {
    const method = (m.get("cseq") || "").split(" ")[1];
    if (method === "INVITE") { onInviteResponse(m); return; }
    if (method === "REGISTER") {
      if (m.status === 401 || m.status === 407) {
        if (P.regAuthTried) { set("failed", "Baton refused the password"); return; }
        P.regAuthTried = true;
        register(authorization(m, "REGISTER", `sip:${P.domain}`), P.state === "off" ? 0 : 600);
      } else if (m.status >= 200 && m.status < 300) {
        P.regAuthTried = false;
        if (P.state === "connecting") { set("ready"); clearInterval(P.regTimer); P.regTimer = setInterval(() => register(), 240000); }
      } else if (m.status >= 300) set("failed", `registration refused (${m.status})`);
    }
  }

  async function onInvite(m) {
    const callId = m.get("call-id");
    if (P.call && P.call.callId === callId) return reinvite(m);
    if (P.call) { respond(m, 486, "Busy Here"); return; }
    const from = m.get("from") || "";
    const name = (from.match(/"([^"]+)"/) || from.match(/sip:([^@>;]+)/) || [null, "?"])[1];
    P.call = { invite: m, callId, tag: rand(4), remote: (m.get("contact") || "").replace(/^.*<|>.*$/g, ""),
               from: m.get("from"), to: m.get("to"), answered: false, peer: name };
    respond(m, 180, "Ringing", [`Contact: ${contact()}`]);
    set("ringing", name);
  }

  // The call's media: the microphone out, what arrives to the <audio> element and an analyser.
  // No STUN or TURN servers: Baton is ICE-lite on an address the browser reaches (docs/sip.md).
  function peer() {
    const pc = new RTCPeerConnection({ iceServers: [] });
    P.mic.getTracks().forEach((t) => pc.addTrack(t, P.mic));
    pc.ontrack = (ev) => {
      const audio = document.getElementById("bp-audio");
      if (audio) audio.srcObject = ev.streams[0] || new MediaStream([ev.track]);
      const ctx = new AudioContext();
      const source = ctx.createMediaStreamSource(new MediaStream([ev.track]));
      P.analyser = ctx.createAnalyser();
      P.analyser.fftSize = 8192;
      source.connect(P.analyser);
    };
    return pc;
  }

  // Our candidates go in the SDP whole (Baton takes no trickled ones): wait for gathering, at
  // most 3 s (host candidates take milliseconds).
  async function gathered(pc) {
    if (pc.iceGatheringState === "complete") return;
    await new Promise((done) => {
      const t = setTimeout(done, 3000);
      pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") { clearTimeout(t); done(); } });
    });
  }

  async function sdpAnswer(offer) {
    const pc = P.pc;
    await pc.setRemoteDescription({ type: "offer", sdp: offer });
    await pc.setLocalDescription(await pc.createAnswer());
    await gathered(pc);
    return pc.localDescription.sdp;
  }

  // ---------------------------------------------------------------- dialling out
  const DIALABLE = /^[0-9*#+]{1,32}$/;
  const FAILURES = {
    403: "you may not call this number", 404: "no such number", 408: "no answer", 410: "no such number",
    480: "no answer", 484: "the number is incomplete", 486: "busy", 487: "cancelled", 488: "no common audio codec",
    600: "busy", 603: "declined", 604: "no such number",
  };

  // Call ``number`` (digits, * and #; spaces, dots and dashes are dropped). Resolves when the
  // call is answered; rejects with an Error whose message says why not, in words.
  async function call(number) {
    const digits = String(number || "").replace(/[\s().-]/g, "");
    if (!digits) throw new Error("type a number first");
    if (!DIALABLE.test(digits)) throw new Error(`"${number}" is not a number: use the digits 0-9, * and #`);
    if (P.call) throw new Error("you are in a call: hang up first");
    if (P.state !== "ready") throw new Error("this browser is not registered as your phone yet");
    const c = { outbound: true, callId: rand(8), tag: rand(4), peer: digits, answered: false,
                uri: `sip:${digits}@${P.domain}`, authTried: false, remote: null, remoteTo: null };
    c.localFrom = `<sip:${P.user}@${P.domain}>;tag=${c.tag}`;
    const outcome = new Promise((resolve, reject) => { c.settle = { resolve, reject }; });
    P.call = c;
    set("calling", digits);
    try {
      P.pc = peer();
      await P.pc.setLocalDescription(await P.pc.createOffer());
      await gathered(P.pc);
    } catch (e) {
      fail(c, `the call could not be set up: ${e.message}`);
      return outcome;
    }
    if (P.call !== c) return outcome;  // hung up while the candidates gathered
    c.offer = P.pc.localDescription.sdp;
    invite(c);
    return outcome;
  }

  function invite(c, auth = null) {
    c.cseq = P.cseq++;
    c.branch = request("INVITE", c.uri, [
      `From: ${c.localFrom}`, `To: <${c.uri}>`, `Call-ID: ${c.callId}`, `CSeq: ${c.cseq} INVITE`,
      `Contact: ${contact()}`, "User-Agent: Baton console", ...(auth ? [auth] : []),
    ], c.offer);
  }

  function ackFailure(c, m) {  // the ACK of a non-2xx final answer: the INVITE's branch (§17.1.1.3)
    request("ACK", c.uri, [`From: ${c.localFrom}`, `To: ${m.get("to")}`, `Call-ID: ${c.callId}`,
                           `CSeq: ${c.cseq} ACK`], "", c.branch);
  }

  function ackAnswer(c, m) {  // the ACK of a 2xx: a new transaction, to the remote target
    const to = m.get("to"), target = (m.get("contact") || "").replace(/^.*<|>.*$/g, "") || c.uri;
    request("ACK", target, [`From: ${c.localFrom}`, `To: ${to}`, `Call-ID: ${c.callId}`, `CSeq: ${c.cseq} ACK`]);
    return { to, target };
  }

  function fail(c, why) {
    if (P.call === c) { teardown(); set("ready"); }
    c.settle.reject(new Error(why));
  }

  async function onInviteResponse(m) {
    const c = [P.call, P.lastCall].find((x) => x && x.outbound && x.callId === m.get("call-id"));
    if (!c || parseInt(m.get("cseq"), 10) !== c.cseq) return;  // not ours, or before the digest
    const current = P.call === c;
    if (m.status < 200) {
      if (current && !c.answered && (m.status === 180 || m.status === 183)) set("calling", `${c.peer} (ringing)`);
      return;
    }
    if (m.status >= 300) {
      ackFailure(c, m);
      if (!current) return;
      if ((m.status === 401 || m.status === 407) && !c.authTried) {
        c.authTried = true;
        invite(c, authorization(m, "INVITE", c.uri));
        return;
      }
      const why = m.status === 401 || m.status === 407 ? "Baton refused the password"
        : FAILURES[m.status] || "the call failed";
      fail(c, `${c.peer}: ${why} (${m.status} ${m.reason})`);
      return;
    }
    const { to, target } = ackAnswer(c, m);
    if (!current) {  // answered after we hung up (the 200 crossed our CANCEL): end it (§15)
      request("BYE", target, [`From: ${c.localFrom}`, `To: ${to}`, `Call-ID: ${c.callId}`, `CSeq: ${P.cseq++} BYE`]);
      return;
    }
    if (c.answered) return;  // a repeated 2xx: ACKed again above
    c.answered = true;
    c.remoteTo = to; c.remote = target;
    try {
      await P.pc.setRemoteDescription({ type: "answer", sdp: m.body });
    } catch (e) {
      hangup();
      c.settle.reject(new Error(`${c.peer}: the answer could not be used (${e.message})`));
      return;
    }
    set("talking", c.peer);
    c.settle.resolve();
  }

  // Key presses in the call, as RFC 4733 telephone-events (what phones send; Baton's flows read
  // them: PTT groups take * and #, roll calls a digit).
  function dtmf(keys) {
    const sender = P.pc && P.pc.getSenders().find((s) => s.track && s.track.kind === "audio");
    if (!P.call || !P.call.answered || !sender) throw new Error("key presses are sent in a call: there is none now");
    if (!/^[0-9*#A-D]+$/i.test(keys)) throw new Error(`"${keys}" is not a key of the dial pad`);
    if (!sender.dtmf || !sender.dtmf.canInsertDTMF) throw new Error("this call does not carry key presses");
    sender.dtmf.insertDTMF(sender.dtmf.toneBuffer + keys, 100, 70);
  }

  async function answer() {
    const call = P.call;
    if (!call || call.answered) return;
    call.answered = true;
    P.pc = peer();
    try {
      const sdp = await sdpAnswer(call.invite.body);
      respond(call.invite, 200, "OK", [`Contact: ${contact()}`], sdp);
      set("talking", call.peer);
    } catch (e) {
      respond(call.invite, 488, "Not Acceptable Here");
      teardown(); set("ready", `the call could not be set up: ${e.message}`);
    }
  }

  async function reinvite(m) {
    if (!P.pc) { respond(m, 491, "Request Pending"); return; }
    try { respond(m, 200, "OK", [`Contact: ${contact()}`], await sdpAnswer(m.body)); }
    catch (e) { respond(m, 488, "Not Acceptable Here"); }
  }

  function decline() {
    if (!P.call || P.call.answered) return;
    respond(P.call.invite, 603, "Decline");
    teardown(); set("ready");
  }

  function hangup() {
    const call = P.call;
    if (!call) return;
    if (call.outbound && !call.answered) {  // still dialling: CANCEL (its 487 is ACKed above)
      if (call.branch) {
        request("CANCEL", call.uri, [`From: ${call.localFrom}`, `To: <${call.uri}>`, `Call-ID: ${call.callId}`,
                                     `CSeq: ${call.cseq} CANCEL`], "", call.branch);
      }
      fail(call, `${call.peer}: cancelled`);
      return;
    }
    if (!call.answered) { decline(); return; }
    const [from, to] = call.outbound ? [call.localFrom, call.remoteTo] : [`${call.to};tag=${call.tag}`, call.from];
    request("BYE", call.remote, [`From: ${from}`, `To: ${to}`, `Call-ID: ${call.callId}`, `CSeq: ${P.cseq++} BYE`]);
    teardown(); set("ready");
  }

  function teardown() {
    if (P.pc) { P.pc.close(); P.pc = null; }
    P.lastCall = P.call;
    P.call = null; P.analyser = null;
    const audio = document.getElementById("bp-audio");
    if (audio) audio.srcObject = null;
  }

  // What the page hears: the strongest frequency and its level (for the console's meter and
  // for tests, which compare it with the tone the other party sends).
  function heard() {
    if (!P.analyser) return null;
    const bins = new Float32Array(P.analyser.frequencyBinCount);
    P.analyser.getFloatFrequencyData(bins);
    let best = 0;
    for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
    return { hz: (best * P.analyser.context.sampleRate) / P.analyser.fftSize, db: bins[best] };
  }

  // The level (dB) the page hears at each of these frequencies: who is heard, for tests.
  function levels(freqs) {
    if (!P.analyser) return null;
    const bins = new Float32Array(P.analyser.frequencyBinCount);
    P.analyser.getFloatFrequencyData(bins);
    const hz = P.analyser.context.sampleRate / P.analyser.fftSize;
    return freqs.map((f) => {
      const i = Math.round(f / hz);
      return Math.max(bins[i - 1], bins[i], bins[i + 1]);
    });
  }

  // The loudest level (dB) the page heard at each of these frequencies during the next ``ms``:
  // a short tone (the talk-permit chirp) is caught whenever it comes. For tests.
  function peaks(freqs, ms) {
    const best = freqs.map(() => -Infinity);
    return new Promise((done) => {
      const t0 = performance.now();
      const tick = setInterval(() => {
        const l = levels(freqs);
        if (l) l.forEach((v, i) => { best[i] = Math.max(best[i], v); });
        if (performance.now() - t0 >= ms) { clearInterval(tick); done(best); }
      }, 10);
    });
  }

  return { start, stop, answer, decline, hangup, call, dtmf, heard, levels, peaks, level, microphones,
           useMic, get state() { return P.state; }, get deviceId() { return P.deviceId; },
           get inCall() { return !!(P.call && P.call.answered); },
           set onchange(fn) { P.onchange = fn; }, md5 };
})();
