// src/server.ts
import { createHmac, timingSafeEqual } from "node:crypto";
function base64url(data) {
  return Buffer.from(data).toString("base64url");
}
function createJoinToken(secret, grant) {
  if (!secret || !grant.userId || !grant.channel) {
    throw new TypeError("secret, userId and channel must be non-empty");
  }
  const ttl = grant.ttlSeconds ?? 3600;
  if (!Number.isInteger(ttl) || ttl < 1) throw new TypeError(`ttlSeconds must be a positive integer: ${ttl}`);
  const now = Math.floor(Date.now() / 1e3);
  const claims = {
    sub: grant.userId,
    channel: grant.channel,
    publish: grant.publish ?? true,
    subscribe: grant.subscribe ?? true,
    iat: now,
    exp: now + ttl
  };
  if (grant.name !== void 0) claims["name"] = grant.name;
  const signed = `${base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }))}.${base64url(JSON.stringify(claims))}`;
  const signature = createHmac("sha256", secret).update(signed).digest();
  return `${signed}.${base64url(signature)}`;
}
var MIN_WEBHOOK_SECRET_BYTES = 16;
var MAX_SIGNATURE_HEADER_BYTES = 1024;
var MAX_SIGNATURES = 8;
var WebhookVerificationError = class extends Error {
  code;
  constructor(code, message) {
    super(message);
    this.name = "WebhookVerificationError";
    this.code = code;
  }
};
function verifyWebhook(body, signatureHeader, secret, toleranceSeconds = 300, nowSeconds = Math.floor(Date.now() / 1e3)) {
  if (Buffer.byteLength(secret ?? "", "utf8") < MIN_WEBHOOK_SECRET_BYTES) {
    throw new WebhookVerificationError("invalid_argument", `webhook secret must be at least ${MIN_WEBHOOK_SECRET_BYTES} bytes`);
  }
  if (typeof toleranceSeconds !== "number" || !Number.isFinite(toleranceSeconds) || toleranceSeconds < 0) {
    throw new WebhookVerificationError("invalid_argument", `toleranceSeconds must be a finite number >= 0, not ${String(toleranceSeconds)}`);
  }
  const malformed = () => new WebhookVerificationError("malformed_header", "malformed Mooyaho-Signature header");
  const header = signatureHeader ?? "";
  if (header.length > MAX_SIGNATURE_HEADER_BYTES) throw malformed();
  let timestamp;
  const signatures = [];
  for (const part of header.split(",")) {
    const eq = part.indexOf("=");
    if (eq < 0) throw malformed();
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (key === "t") {
      if (!/^[0-9]{1,15}$/.test(value)) throw malformed();
      timestamp = Number(value);
    } else if (key === "v1") {
      if (signatures.length === MAX_SIGNATURES || !/^[0-9a-fA-F]{64}$/.test(value)) throw malformed();
      signatures.push(Buffer.from(value, "hex"));
    }
  }
  if (timestamp === void 0 || signatures.length === 0) throw malformed();
  if (Math.abs(nowSeconds - timestamp) > toleranceSeconds) {
    throw new WebhookVerificationError("expired", `webhook timestamp ${timestamp} is more than ${toleranceSeconds} s from now`);
  }
  const bytes = typeof body === "string" ? Buffer.from(body, "utf8") : Buffer.from(body);
  const expected = createHmac("sha256", secret).update(`${timestamp}.`).update(bytes).digest();
  if (!signatures.some((signature) => timingSafeEqual(signature, expected))) {
    throw new WebhookVerificationError("bad_signature", "webhook signature does not match");
  }
  let event;
  try {
    event = JSON.parse(bytes.toString("utf8"));
  } catch (e) {
    throw new WebhookVerificationError("invalid_body", `webhook body is not JSON: ${e.message}`);
  }
  if (typeof event !== "object" || event === null || typeof event.event !== "string") {
    throw new WebhookVerificationError("invalid_body", "webhook body is not an event");
  }
  return event;
}
var MooyahoApiError = class extends Error {
  status;
  /** The server's short error name (`Not Found`, ...), when it sent one. */
  error;
  constructor(status, message, error) {
    super(message);
    this.name = "MooyahoApiError";
    this.status = status;
    this.error = error;
  }
};
var MooyahoServer = class {
  baseUrl;
  #apiKey;
  #timeoutMs;
  constructor(config) {
    const baseUrl = config.baseUrl.replace(/\/+$/, "");
    if (!/^https?:\/\//.test(baseUrl)) throw new TypeError(`baseUrl must be http(s): ${config.baseUrl}`);
    this.baseUrl = baseUrl;
    this.#apiKey = config.apiKey;
    this.#timeoutMs = config.timeoutMs ?? 1e4;
  }
  createChannel(sfuEnabled = false) {
    return this.#call("POST", "/channels", { sfuEnabled });
  }
  getChannel(id) {
    return this.#call("GET", `/channels/${encodeURIComponent(id)}`);
  }
  listChannels() {
    return this.#call("GET", "/channels");
  }
  async deleteChannel(id) {
    await this.#call("DELETE", `/channels/${encodeURIComponent(id)}`);
  }
  bulkDeleteChannels(ids) {
    return this.#call("POST", "/channels/bulk-delete", { ids });
  }
  /** Has the server sign a join token (`POST /tokens`); `createJoinToken` does it offline. */
  createToken(grant) {
    return this.#call("POST", "/tokens", grant);
  }
  /** Binds a user (an object with a non-empty string `id`) to a browser's session. */
  integrateUser(sessionId, user) {
    return this.#call("POST", `/sessions/${encodeURIComponent(sessionId)}`, user);
  }
  createSfuServer(address, fingerprint) {
    return this.#call("POST", "/sfu-servers", fingerprint === void 0 ? { address } : { address, fingerprint });
  }
  listSfuServers() {
    return this.#call("GET", "/sfu-servers");
  }
  getSfuServer(id) {
    return this.#call("GET", `/sfu-servers/${id}`);
  }
  updateSfuServer(id, patch) {
    return this.#call("PATCH", `/sfu-servers/${id}`, patch);
  }
  drainSfuServer(id) {
    return this.#call("POST", `/sfu-servers/${id}/drain`);
  }
  /** `force` deletes even while channels are placed on the node (otherwise 409). */
  async deleteSfuServer(id, force = false) {
    await this.#call("DELETE", `/sfu-servers/${id}?force=${force}`);
  }
  async #call(method, path, body) {
    let response;
    try {
      response = await fetch(this.baseUrl + path, {
        method,
        headers: {
          authorization: `Bearer ${this.#apiKey}`,
          ...body === void 0 ? {} : { "content-type": "application/json" }
        },
        body: body === void 0 ? null : JSON.stringify(body),
        signal: AbortSignal.timeout(this.#timeoutMs)
      });
    } catch (e) {
      throw new MooyahoApiError(0, `${method} ${path}: ${e instanceof Error ? e.message : String(e)}`);
    }
    const text = await response.text();
    if (!response.ok) {
      let message = text || response.statusText;
      let error;
      try {
        const parsed = JSON.parse(text);
        if (typeof parsed.message === "string") message = parsed.message;
        if (typeof parsed.error === "string") error = parsed.error;
      } catch {
      }
      throw new MooyahoApiError(response.status, message, error);
    }
    return text ? JSON.parse(text) : void 0;
  }
};
export {
  MooyahoApiError,
  MooyahoServer,
  WebhookVerificationError,
  createJoinToken,
  verifyWebhook
};
