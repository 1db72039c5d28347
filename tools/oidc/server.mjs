// A real OpenID provider for gpuwarden's integration tests (never for production): oidc-provider 9
// over HTTPS on loopback, with a throwaway RSA signing key, users in different groups, and
// clients for the authorization-code flow (PKCE), the device flow and client_credentials.
//
//   node tools/oidc/server.mjs DIR PORT
//
// DIR holds tls.crt / tls.key (made by tools/oidc-start.sh). The issuer is https://127.0.0.1:PORT.
// Access tokens for the resource https://gpuwarden.test/api are RS256 JWTs (RFC 9068) carrying a
// "groups" claim (and "amr" for machine clients that stand for an MFA-checked login); ID tokens
// carry groups, email and email_verified. A token for another resource gets that resource as its
// audience (to test audience refusal).
//
// Test-only extras: the client "gpuwarden" accepts any loopback gpuwarden callback
// https://127.0.0.1:PORT/api/v1/oidc/NAME/callback (servers under test listen on ephemeral ports),
// and POST /test/groups?account=ID&groups=a,b (or client=ID) changes someone's groups, so tests can
// show that removed groups remove roles.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { generateKeyPairSync } from 'node:crypto';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

// Packages live in tools/node (tools/install-deps.sh installs them there).
const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '../node/package.json'));
const { default: Provider } = await import(pathToFileURL(require.resolve('oidc-provider')).href);

const [dir, port] = process.argv.slice(2);
if (!dir || !port) {
  console.error('usage: server.mjs DIR PORT');
  process.exit(2);
}
const issuer = `https://127.0.0.1:${port}`;
const API = 'https://gpuwarden.test/api';

// Users: alice and bob map to gpuwarden roles, mallory is in no mapped group, eve's e-mail is
// not verified.
const ACCOUNTS = {
  alice: { email: 'alice@example.test', email_verified: true, groups: ['gpu-admins'] },
  bob: { email: 'bob@example.test', email_verified: true, groups: ['ml-team', 'staff'] },
  mallory: { email: 'mallory@example.test', email_verified: true, groups: ['marketing'] },
  eve: { email: 'eve@example.test', email_verified: false, groups: ['ml-team'] },
  frank: { email: 'frank@example.test', email_verified: true, groups: ['ml-team'] },
};
// Groups of machine clients (client_credentials tokens), and the amr their tokens assert.
const CLIENT_GROUPS = {
  'ci-robot': ['ml-team'],
  'stray-robot': ['nobody'],
  'admin-robot': ['gpu-admins'],
  'mfa-admin-robot': ['gpu-admins'],
  'shifting-robot': ['ml-team'],
};
const CLIENT_AMR = { 'mfa-admin-robot': ['pwd', 'mfa'] };
const machine = (id) => ({
  client_id: id,
  client_secret: `${id}-secret`,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
});
const CALLBACK = /^https:\/\/127\.0\.0\.1:\d+\/api\/v1\/oidc\/[a-z0-9-]+\/callback$/;

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });

const configuration = {
  clients: [
    {
      client_id: 'gpuwarden',
      client_secret: 'gpuwarden-test-secret',
      redirect_uris: ['https://127.0.0.1/oidc/callback'],
      grant_types: ['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    ...Object.keys(CLIENT_GROUPS).map(machine),
  ],
  jwks: { keys: [{ ...rsa, kid: 'rsa-1', use: 'sig', alg: 'RS256' }, { ...ec, kid: 'ec-1', use: 'sig', alg: 'ES256' }] },
  scopes: ['openid', 'email', 'groups', 'api:read', 'api:write'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
  conformIdTokenClaims: false, // the ID token itself carries email and groups
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => API,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => ({
        scope: 'api:read api:write',
        audience: resource,
        accessTokenTTL: 600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  async findAccount(ctx, id) {
    const a = ACCOUNTS[id];
    if (!a) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...a }; } };
  },
  async extraTokenClaims(ctx, token) {
    if (token.accountId && ACCOUNTS[token.accountId]) return { groups: ACCOUNTS[token.accountId].groups };
    if (token.clientId && CLIENT_GROUPS[token.clientId]) {
      const amr = CLIENT_AMR[token.clientId];
      return { groups: CLIENT_GROUPS[token.clientId], ...(amr ? { amr } : {}) };
    }
    return undefined;
  },
  ttl: { AccessToken: 600, ClientCredentials: 600, IdToken: 600, DeviceCode: 300, Interaction: 300, Session: 3600, Grant: 3600, AuthorizationCode: 60 },
  cookies: { keys: ['gpuwarden-test-cookie-key'] },
};

const provider = new Provider(issuer, configuration);
const allowed = provider.Client.prototype.redirectUriAllowed;
provider.Client.prototype.redirectUriAllowed = function redirectUriAllowed(uri) {
  return allowed.call(this, uri) || (this.clientId === 'gpuwarden' && CALLBACK.test(uri));
};
provider.use(async (ctx, next) => {
  if (ctx.path !== '/test/groups' || ctx.method !== 'POST') return next();
  const { account, client, groups } = ctx.query;
  const list = groups ? String(groups).split(',') : [];
  if (account && ACCOUNTS[account]) ACCOUNTS[account].groups = list;
  else if (client && CLIENT_GROUPS[client]) CLIENT_GROUPS[client] = list;
  else { ctx.status = 404; return undefined; }
  ctx.status = 204;
  return undefined;
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
const server = createServer(
  { key: readFileSync(`${dir}/tls.key`), cert: readFileSync(`${dir}/tls.crt`) },
  provider.callback(),
);
server.listen(Number(port), '127.0.0.1', () => console.log(`oidc test provider at ${issuer}`));
