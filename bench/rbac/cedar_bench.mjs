// Cedar peer for bench/rbac: replays the model and request mix exported by rbac_bench
// (--export_model) through @cedar-policy/cedar-wasm and reports decisions/s.
//
//   node bench/rbac/cedar_bench.mjs MODEL.json full|sliced [SECONDS]
//
// Encoding (standard Cedar RBAC, chosen to be as favourable to Cedar as the model allows):
//  - every role R gets at most two policies, its permissions as an inline action list:
//      permit(principal in ClusterRole::"R", action in [Action::"jobs:read", ...], resource);
//      permit(principal, action in [...], resource is Tenant)
//        when { principal.hasTag(resource.name) && principal.getTag(resource.name).contains(Role::"R") };
//    a cluster-scope binding makes the user a member of ClusterRole::"R"; a tenant-scope binding
//    puts Role::"R" in the user's tag for that tenant;
//  - cluster-level requests use resource Cluster::"cluster", which no tenant policy matches;
//  - policy sets are parsed before timing (preparsePolicySet + statefulIsAuthorized), and each
//    request carries only its own entity slice (the user and the tenant), built before timing.
// Modes: `full` evaluates the whole policy set (Cedar has no policy index: every request pays for
// every policy); `sliced` gives Cedar an ideal policy slicer for free: each user's requests go to
// a preparsed set holding only the policies of the roles that user is bound to (same decisions,
// since no other policy can match that principal). run.sh compares against the faster of the two.
// Every decision is checked against the C++ authorizer's; any mismatch fails the run.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '../../tools/node/package.json'));
const cedar = require('@cedar-policy/cedar-wasm/nodejs');

const [modelPath, mode, secondsArg] = process.argv.slice(2);
if (!modelPath || (mode !== 'full' && mode !== 'sliced')) {
  console.error('usage: cedar_bench.mjs MODEL.json full|sliced [SECONDS]');
  process.exit(2);
}
const seconds = Number(secondsArg ?? 5);
const model = JSON.parse(readFileSync(modelPath, 'utf8'));

// Policies.
const q = (s) => JSON.stringify(s);
const clusterPolicy = new Map(), tenantPolicy = new Map();
for (const role of model.roles) {
  if (role.perms.length === 0) continue;
  const actions = `[${role.perms.map((p) => `Action::${q(p)}`).join(', ')}]`;
  if (role.tenant === '') {
    clusterPolicy.set(role.id,
        `permit(principal in ClusterRole::${q(role.id)}, action in ${actions}, resource);`);
  }
  if (role.id !== 'admin') {
    tenantPolicy.set(role.id,
        `permit(principal, action in ${actions}, resource is Tenant) when { ` +
        `principal.hasTag(resource.name) && principal.getTag(resource.name).contains(Role::${q(role.id)}) };`);
  }
}
let policyCount = 0;
function preparse(id, texts) {
  const parsed = cedar.preparsePolicySet(id, { staticPolicies: texts.join('\n') });
  if (parsed.type !== 'success') {
    console.error('cedar: policy set failed to parse:', JSON.stringify(parsed.errors).slice(0, 2000));
    process.exit(1);
  }
  policyCount += texts.length;
}
if (mode === 'full') preparse('rbac', [...clusterPolicy.values(), ...tenantPolicy.values()]);

// Entities, one slice per user and per tenant, built once.
const users = new Map();
const userEntity = (id) => {
  let e = users.get(id);
  if (!e) {
    e = { uid: { type: 'User', id }, attrs: {}, parents: [], tags: {} };
    users.set(id, e);
  }
  return e;
};
for (const b of model.bindings) {
  if (b.kind !== 'user') continue;
  const e = userEntity(b.subject);
  if (b.scope === '') {
    e.parents.push({ type: 'ClusterRole', id: b.role });
  } else {
    (e.tags[b.scope] ??= []).push({ __entity: { type: 'Role', id: b.role } });
  }
}
const resources = new Map([['', { uid: { type: 'Cluster', id: 'cluster' }, attrs: {}, parents: [] }]]);
const resourceEntity = (t) => {
  let e = resources.get(t);
  if (!e) {
    e = { uid: { type: 'Tenant', id: t }, attrs: { name: t }, parents: [] };
    resources.set(t, e);
  }
  return e;
};
// In sliced mode only the first requests are used (each distinct user costs a preparse).
const requests = mode === 'full' ? model.requests : model.requests.slice(0, 20000);
const sliced = new Set();
function slicedSetFor(user) {
  if (!sliced.has(user)) {
    const texts = new Set();
    for (const p of user.parents) if (clusterPolicy.has(p.id)) texts.add(clusterPolicy.get(p.id));
    for (const roles of Object.values(user.tags)) {
      for (const r of roles) if (tenantPolicy.has(r.__entity.id)) texts.add(tenantPolicy.get(r.__entity.id));
    }
    preparse('u:' + user.uid.id, [...texts]);
    sliced.add(user);
  }
  return 'u:' + user.uid.id;
}
const calls = requests.map((r) => {
  const principal = userEntity(r.s);  // an unknown user is an entity with no roles
  const resource = resourceEntity(r.t);
  return {
    call: {
      principal: principal.uid,
      action: { type: 'Action', id: r.p },
      resource: resource.uid,
      context: {},
      preparsedPolicySetId: mode === 'full' ? 'rbac' : slicedSetFor(principal),
      entities: [principal, resource],
    },
    allow: r.allow,
  };
});

function decide(c) {
  const a = cedar.statefulIsAuthorized(c.call);
  if (a.type !== 'success') throw new Error('cedar: ' + JSON.stringify(a.errors));
  return a.response.decision === 'allow';
}

// Warm up (JIT, wasm tiering), then time individual calls until `seconds` have passed.
for (let i = 0; i < Math.min(mode === 'full' ? 20 : 2000, calls.length); ++i) decide(calls[i]);
const lat = [];
let mismatches = 0, done = 0;
const start = process.hrtime.bigint();
const deadline = start + BigInt(Math.round(seconds * 1e9));
for (let i = 0; ; i = (i + 1) % calls.length) {
  const c = calls[i];
  const t0 = process.hrtime.bigint();
  const allowed = decide(c);
  const t1 = process.hrtime.bigint();
  lat.push(Number(t1 - t0));
  if (allowed !== c.allow) ++mismatches;
  ++done;
  if ((done & 63) === 0 && t1 >= deadline) break;
}
const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
lat.sort((a, b) => a - b);
const pct = (p) => lat[Math.floor(p * (lat.length - 1))];
console.log(
  `CEDAR mode=${mode} cedar=${cedar.getCedarVersion()} policies=${policyCount} decisions=${done} ` +
    `decisions_per_sec=${(done / elapsed).toFixed(0)} p50_ns=${pct(0.5)} p99_ns=${pct(0.99)} ` +
    `mismatches=${mismatches}`);
if (mismatches > 0) {
  console.error(`cedar: ${mismatches} decisions differ from the C++ authorizer`);
  process.exit(1);
}
