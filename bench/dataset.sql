-- The benchmark's dataset, generated in SQL on a freshly migrated database (make bench).
-- Deterministic: every value is arithmetic on the row number, no random(). Ids are the tables'
-- own sequences, which start at 1 on a fresh database, so row i gets id i (checked at the end).
--   100,000 products in 50 categories (the 4 defaults of the data migration and 46 more),
--   10,000 users, 50,000 orders with 1 to 5 items each (about 150,000 items).
-- Stock is a billion of each product, so the POST /orders/ runs never run out.
-- :hashed_password is a psql variable: one real argon2 hash, shared by every generated user.

INSERT INTO categories (name, slug, description, created_at)
SELECT format('Category %s', lpad(i::text, 2, '0')),
       format('category-%s', lpad(i::text, 2, '0')),
       format('Generated category %s of the benchmark dataset', i),
       timestamptz '2026-01-01 00:00:00+00'
FROM generate_series(5, 50) AS i;

CREATE TEMPORARY TABLE bench_categories AS
SELECT row_number() OVER (ORDER BY id) - 1 AS slot, id FROM categories;

INSERT INTO products (name, slug, description, price, sku, stock_quantity, is_active,
                      category_id, created_at, updated_at)
SELECT format('Product %s', lpad(i::text, 6, '0')),
       format('product-%s', lpad(i::text, 6, '0')),
       format('Benchmark product number %s: a plain description of about a hundred characters, '
              'as a catalog would hold.', i),
       ((i * 7919) % 99900 + 100) / 100.0,
       format('SKU-%s', lpad(i::text, 6, '0')),
       1000000000,
       true,
       c.id,
       timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second',
       timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second'
FROM generate_series(1, 100000) AS i
JOIN bench_categories AS c ON c.slot = i % 50
ORDER BY i;

INSERT INTO users (username, email, full_name, hashed_password, created_at, updated_at)
SELECT format('user_%s', lpad(i::text, 5, '0')),
       format('user_%s@example.com', lpad(i::text, 5, '0')),
       format('Bench User %s', i),
       :'hashed_password',
       timestamptz '2025-01-01 00:00:00+00' + i * interval '1 minute',
       timestamptz '2025-01-01 00:00:00+00' + i * interval '1 minute'
FROM generate_series(1, 10000) AS i
ORDER BY i;

INSERT INTO orders (order_number, status, total_amount, user_id, shipping_address,
                    created_at, updated_at)
SELECT format('ORD-%s-%s', to_char(t AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISS'),
              upper(lpad(to_hex(i), 6, '0'))),
       CASE i % 10 WHEN 0 THEN 'cancelled' WHEN 1 THEN 'pending' WHEN 2 THEN 'pending'
                   WHEN 3 THEN 'pending' WHEN 4 THEN 'confirmed' WHEN 5 THEN 'shipped'
                   ELSE 'delivered' END,
       0,
       1 + (i * 7919) % 10000,
       format('%s Benchmark Street, Testville', i),
       t,
       t
FROM generate_series(1, 50000) AS i,
     LATERAL (SELECT timestamptz '2026-02-01 00:00:00+00' + i * interval '1 minute') AS ts(t)
ORDER BY i;

-- Order i has 1 + (31 i mod 5) lines; line k is product 1 + ((7919 i + 15485 k) mod 100000),
-- distinct for k = 1..5 (15485 k mod 100000 is), at that product's price.
INSERT INTO order_items (order_id, product_id, quantity, unit_price, total_price)
SELECT o.i, p.id, line.quantity, p.price, p.price * line.quantity
FROM generate_series(1, 50000) AS o(i)
CROSS JOIN LATERAL generate_series(1, 1 + (o.i * 31) % 5) AS k(k)
CROSS JOIN LATERAL (
    SELECT 1 + (o.i * 7919 + k.k * 15485) % 100000 AS product_id, 1 + (o.i + k.k) % 3 AS quantity
) AS line
JOIN products AS p ON p.id = line.product_id
ORDER BY o.i, k.k;

UPDATE orders AS o SET total_amount = s.total
FROM (SELECT order_id, sum(total_price) AS total FROM order_items GROUP BY order_id) AS s
WHERE s.order_id = o.id;

DO $$
BEGIN
    IF (SELECT count(*) FROM products) <> 100000 OR (SELECT max(id) FROM products) <> 100000
       OR (SELECT count(*) FROM users) <> 10000 OR (SELECT max(id) FROM users) <> 10000
       OR (SELECT count(*) FROM orders) <> 50000 OR (SELECT max(id) FROM orders) <> 50000
       OR (SELECT count(*) FROM categories) <> 50 THEN
        RAISE EXCEPTION 'the benchmark dataset needs a fresh database (ids from 1)';
    END IF;
END $$;
