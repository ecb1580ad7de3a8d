// node-postgres through pgwarden. Usage: node node_pg_check.js CONNECTION_STRING
const { Client, Pool } = require('pg');

function check(name, cond) {
  if (!cond) { console.log(`FAIL ${name}`); process.exit(1); }
  console.log(`ok ${name}`);
}

(async () => {
  const url = process.argv[2];
  const client = new Client({ connectionString: url });
  await client.connect();
  let r = await client.query('select $1::int + 1 as n, $2::text as s', [41, 'héllo']);
  check('params', r.rows[0].n === 42 && r.rows[0].s === 'héllo');
  r = await client.query({ name: 'named', text: 'select $1::int * 2 as d', values: [21] });
  r = await client.query({ name: 'named', text: 'select $1::int * 2 as d', values: [50] });
  check('named prepared', r.rows[0].d === 100);
  r = await client.query('select generate_series(1, 2000) as g');
  check('many rows', r.rowCount === 2000);
  try {
    await client.query('select 1/0');
    check('error raised', false);
  } catch (e) {
    check('error raised', e.code === '22012');
  }
  r = await client.query('select 1 as one; select 2 as two');
  check('multi-statement', Array.isArray(r) && r[1].rows[0].two === 2);

  const listener = new Client({ connectionString: url });
  await listener.connect();
  const got = new Promise((resolve) => listener.on('notification', (m) => resolve(m.payload)));
  await listener.query('listen node_chan');
  await client.query("notify node_chan, 'from node'");
  check('listen/notify', (await got) === 'from node');
  await listener.end();
  await client.end();

  const pool = new Pool({ connectionString: url, max: 4 });
  const results = await Promise.all([...Array(40).keys()].map((i) => pool.query('select $1::int as i', [i])));
  check('pool', results.every((res, i) => res.rows[0].i === i));
  await pool.end();
  console.log('ALL OK');
})().catch((e) => { console.log(`FAIL exception ${e.stack}`); process.exit(1); });
