// A real OpenID provider for the single sign-on tests: npm `oidc-provider` (installed by
// scripts/setup-test-env.sh into .oidc/node_modules), on loopback.
//
//   node tests/peers/oidc_provider.js KEYFILE PORT NODE_URL AUDIENCE
//
// KEYFILE holds the provider's signing keys (private JWKs: RS256 ones and one ES256); made on the
// first start. With ROTATE=1 a new RSA key is put first (the provider signs with it; the old one
// stays published).
// PORT 0: any free port. Prints `oidc-provider listening port=N` once it serves. ACCESS_TTL:
// the access tokens' lifetime in seconds (default 600). The page's client also gets refresh
// tokens (rotated on each use), as a site's provider may issue them.
//
// One public client, `triage-page` (PKCE, redirect to NODE_URL/), users with a `roles` claim:
// dr.grey (reader), admin.ann (admin), nobody (no role). The login form is the provider's own
// development form (any password). Access tokens for AUDIENCE are JWTs carrying
// `preferred_username` and `roles`.
//
// Test-only endpoints (never in a real provider):
//   GET /test/token?user=U       an access token the provider issues for U (its own code path)
//   GET /test/forge?kind=K&user=U  a token for the refusal tests: expired, other-key,
//                                unknown-kid, wrong-audience, none (alg none), hs256; and es256:
//                                a valid token signed with the provider's published EC key
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const http = require("node:http");
const path = require("node:path");
const { pathToFileURL } = require("node:url");

const [keyfile, portArg, nodeUrl, audience] = process.argv.slice(2);
const ROLES = { "dr.grey": ["reader"], "admin.ann": ["admin"], nobody: ["visitor"] };
const CLIENT = "triage-page";

function newKey() {
  const { privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  return { ...privateKey.export({ format: "jwk" }), kid: "k-" + crypto.randomBytes(6).toString("hex"), alg: "RS256", use: "sig" };
}

function newEcKey() {
  const { privateKey } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
  return { ...privateKey.export({ format: "jwk" }), kid: "ec-" + crypto.randomBytes(6).toString("hex"), alg: "ES256", use: "sig" };
}

// RSA keys first: the provider signs access tokens with the first RS256 key.
function loadKeys() {
  let keys = fs.existsSync(keyfile) ? JSON.parse(fs.readFileSync(keyfile, "utf8")) : [];
  let rsa = keys.filter((k) => k.kty === "RSA"), ec = keys.filter((k) => k.kty === "EC");
  if (rsa.length === 0 || process.env.ROTATE === "1") rsa = [newKey(), ...rsa];
  if (ec.length === 0) ec = [newEcKey()];
  keys = [...rsa, ...ec];
  fs.writeFileSync(keyfile, JSON.stringify(keys));
  return keys;
}

const b64 = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

function sign(header, claims, jwk) {
  const input = b64(header) + "." + b64(claims);
  if (header.alg === "none") return input + ".";
  if (header.alg === "HS256") return input + "." + crypto.createHmac("sha256", "a shared secret nobody should accept").update(input).digest("base64url");
  const key = crypto.createPrivateKey({ key: jwk, format: "jwk" });
  // JWS ES256 signatures are r || s (IEEE P1363), not DER.
  return input + "." + crypto.sign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" }).toString("base64url");
}

(async () => {
  const modules = path.join(__dirname, "..", "..", ".oidc", "node_modules");
  const { default: Provider } = await import(pathToFileURL(path.join(modules, "oidc-provider", "lib", "index.js")).href);
  const keys = loadKeys();
  const server = http.createServer();
  await new Promise((resolve) => server.listen(Number(portArg), "127.0.0.1", resolve));
  const port = server.address().port;
  const issuer = `http://127.0.0.1:${port}`;
  const accessTtl = Number(process.env.ACCESS_TTL || 600);
  const resourceServer = { scope: "triage", audience, accessTokenFormat: "jwt", accessTokenTTL: accessTtl, jwt: { sign: { alg: "RS256" } } };
  const provider = new Provider(issuer, {
    clients: [{
      client_id: CLIENT,
      token_endpoint_auth_method: "none",
      redirect_uris: [nodeUrl + "/"],
      post_logout_redirect_uris: [nodeUrl + "/"],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
    }],
    jwks: { keys },
    findAccount: async (_ctx, id) => ({
      accountId: id,
      claims: async () => ({ sub: id, preferred_username: id, roles: ROLES[id] || [] }),
    }),
    claims: { openid: ["sub"], profile: ["preferred_username", "roles"] },
    extraTokenClaims: async (_ctx, token) => ({ preferred_username: token.accountId, roles: ROLES[token.accountId] || [] }),
    features: {
      devInteractions: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => audience,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, indicator) => {
          if (indicator !== audience) throw new Provider.errors.InvalidTarget();
          return resourceServer;
        },
      },
    },
    pkce: { required: () => true },
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed("refresh_token"),
    ttl: { AccessToken: accessTtl, RefreshToken: 3600, AuthorizationCode: 60, IdToken: 600, Interaction: 600, Session: 3600, Grant: 3600 },
  });
  provider.on("server_error", (_ctx, err) => console.error("oidc-provider server_error", err));
  const callback = provider.callback();
  const signing = keys[0];
  const now = () => Math.floor(Date.now() / 1000);

  server.on("request", async (req, res) => {
    const url = new URL(req.url, issuer);
    if (!url.pathname.startsWith("/test/")) return callback(req, res);
    try {
      const user = url.searchParams.get("user") || "dr.grey";
      let token;
      if (url.pathname === "/test/token") {
        const client = await provider.Client.find(CLIENT);
        const at = new provider.AccessToken({
          accountId: user,
          client,
          grantId: "test-" + crypto.randomBytes(4).toString("hex"),
          scope: "triage",
          resourceServer: new provider.ResourceServer(audience, resourceServer),
        });
        token = await at.save();
      } else if (url.pathname === "/test/forge") {
        const claims = { iss: issuer, sub: user, aud: audience, iat: now(), exp: now() + 600, preferred_username: user, roles: ROLES[user] || [] };
        const header = { alg: "RS256", typ: "at+jwt", kid: signing.kid };
        switch (url.searchParams.get("kind")) {
          case "expired": token = sign(header, { ...claims, iat: now() - 7200, exp: now() - 3600 }, signing); break;
          case "other-key": token = sign(header, claims, newKey()); break;
          case "unknown-kid": { const k = newKey(); token = sign({ ...header, kid: k.kid }, claims, k); break; }
          case "wrong-audience": token = sign(header, { ...claims, aud: "urn:someone-else" }, signing); break;
          case "none": token = sign({ alg: "none", typ: "at+jwt" }, claims, null); break;
          case "hs256": token = sign({ alg: "HS256", typ: "at+jwt" }, claims, null); break;
          case "es256": { const ec = keys.find((k) => k.kty === "EC"); token = sign({ alg: "ES256", typ: "at+jwt", kid: ec.kid }, claims, ec); break; }
          default: res.writeHead(400); return res.end("unknown kind");
        }
      } else {
        res.writeHead(404); return res.end();
      }
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(token);
    } catch (e) {
      console.error("test endpoint failed", e);
      res.writeHead(500); res.end(String(e));
    }
  });
  console.log(`oidc-provider listening port=${port} kid=${signing.kid}`);
})().catch((e) => { console.error(e); process.exit(1); });
