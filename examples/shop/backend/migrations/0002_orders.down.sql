DROP INDEX orders_product_id;
DROP TABLE orders;
