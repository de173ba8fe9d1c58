DROP TABLE schema_compatibility;
ALTER TABLE products DROP COLUMN stock;
