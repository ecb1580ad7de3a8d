-- Sample data for `pgwarden demo`: customers, shipments and credit reports
-- with realistic Chinese names, phones, ID numbers and addresses. All of it
-- is generated; none of it belongs to a real person.

SET enable_memoize = off;
SELECT setseed(0.4242);

CREATE TABLE customers (
    id          serial PRIMARY KEY,
    name        text NOT NULL,
    phone       text NOT NULL,
    id_number   text NOT NULL,
    email       text,
    address     text NOT NULL,
    city        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE shipments (
    id                serial PRIMARY KEY,
    tracking_no       text NOT NULL UNIQUE,
    customer_id       int NOT NULL REFERENCES customers(id),
    recipient_name    text NOT NULL,
    recipient_phone   text NOT NULL,
    recipient_address text NOT NULL,
    weight_kg         numeric(6,2) NOT NULL,
    status            text NOT NULL,
    shipped_at        timestamptz NOT NULL
);

CREATE TABLE credit_reports (
    id           serial PRIMARY KEY,
    customer_id  int NOT NULL REFERENCES customers(id),
    bank_card    text NOT NULL,
    score        int NOT NULL,
    report       text NOT NULL,
    pulled_by    text NOT NULL,
    pulled_at    timestamptz NOT NULL
);

-- ID number check digit (GB 11643, ISO 7064 MOD 11-2).
CREATE FUNCTION pg_temp.id_check(body text) RETURNS text LANGUAGE sql AS $$
    SELECT substr('10X98765432', (sum(substr(body, i, 1)::int * w[i]) % 11)::int + 1, 1)
    FROM generate_series(1, 17) AS i,
         (SELECT ARRAY[7,9,10,5,8,4,2,1,6,3,7,9,10,5,8,4,2] AS w) AS weights
$$;

CREATE TEMP TABLE regions(code text, province text, city text, district text) ;
INSERT INTO regions VALUES
 ('110105','北京市','北京市','朝阳区'), ('110108','北京市','北京市','海淀区'),
 ('310115','上海市','上海市','浦东新区'), ('310104','上海市','上海市','徐汇区'),
 ('440106','广东省','广州市','天河区'), ('440305','广东省','深圳市','南山区'),
 ('330106','浙江省','杭州市','西湖区'), ('320106','江苏省','南京市','鼓楼区'),
 ('510107','四川省','成都市','武侯区'), ('420106','湖北省','武汉市','武昌区'),
 ('610113','陕西省','西安市','雁塔区'), ('370202','山东省','青岛市','市南区');

CREATE TEMP TABLE parts AS SELECT
  ARRAY['王','李','张','刘','陈','杨','黄','赵','吴','周','徐','孙','马','朱','胡','郭','何','高','林','罗','郑','梁','谢','宋','唐','许','韩','冯','邓','曹'] AS surnames,
  ARRAY['伟','芳','娜','秀英','敏','静','丽','强','磊','军','洋','勇','艳','杰','娟','涛','明','超','秀兰','霞','平','刚','桂英','浩然','子涵','欣怡','梓轩','雨桐','宇航','思远'] AS given,
  ARRAY['138','139','137','136','135','150','151','152','158','159','182','183','187','188','130','131','132','155','156','186','133','153','180','189','177'] AS prefixes,
  ARRAY['人民路','解放路','中山路','建设路','和平路','新华路','文化路','长江路','黄河路','朝阳路'] AS streets,
  ARRAY['阳光花园','幸福里小区','金色家园','翠湖苑','锦绣华庭','东方明珠苑','碧桂园','万科城'] AS estates;

INSERT INTO customers (name, phone, id_number, email, address, city, created_at)
SELECT
  p.surnames[1 + floor(random() * 30)::int] || p.given[1 + floor(random() * 30)::int],
  p.prefixes[1 + floor(random() * 25)::int] || lpad(floor(random() * 100000000)::int::text, 8, '0'),
  idb || pg_temp.id_check(idb),
  'user' || g || '@example.cn',
  r.province || r.city || r.district || p.streets[1 + floor(random() * 10)::int]
    || (1 + floor(random() * 300)::int) || '号' || p.estates[1 + floor(random() * 8)::int]
    || (1 + floor(random() * 30)::int) || '栋' || (101 + floor(random() * 2000)::int) || '室',
  r.city,
  now() - (random() * interval '900 days')
FROM generate_series(1, 3000) AS g
CROSS JOIN parts p
CROSS JOIN LATERAL (SELECT * FROM regions ORDER BY random() + g * 0 LIMIT 1) r
CROSS JOIN LATERAL (
  SELECT r.code || to_char(date '1960-01-01' + floor(random() * 16000)::int, 'YYYYMMDD')
         || lpad(floor(random() * 1000)::int::text, 3, '0') AS idb
) b;

INSERT INTO shipments (tracking_no, customer_id, recipient_name, recipient_phone, recipient_address, weight_kg, status, shipped_at)
SELECT
  'SF' || lpad((1000000000 + g)::text, 12, '0'),
  c.id, c.name, c.phone, c.address,
  round((0.2 + random() * 30)::numeric, 2),
  (ARRAY['已揽收','运输中','派送中','已签收','已签收','已签收'])[1 + floor(random() * 6)::int],
  now() - (random() * interval '60 days')
FROM generate_series(1, 20000) AS g
JOIN customers c ON c.id = 1 + (g * 7919) % 3000;

INSERT INTO credit_reports (customer_id, bank_card, score, report, pulled_by, pulled_at)
SELECT
  c.id,
  '6222' || lpad(floor(random() * 1000000000000)::bigint::text, 12, '0') || lpad(floor(random() * 1000)::int::text, 3, '0'),
  s.score,
  '{"score": ' || s.score || ', "loans": ' || floor(random() * 5)::int
    || ', "overdue_90d": ' || floor(random() * 3)::int
    || ', "credit_limit": ' || (floor(random() * 50) * 1000)::int || '}',
  (ARRAY['loan_officer_01','loan_officer_02','risk_bot'])[1 + floor(random() * 3)::int],
  now() - (random() * interval '365 days')
FROM generate_series(1, 1500) AS g
JOIN customers c ON c.id = 1 + (g * 104729) % 3000
CROSS JOIN LATERAL (SELECT 350 + floor(random() * 500)::int + g * 0 AS score) s;

ANALYZE;
