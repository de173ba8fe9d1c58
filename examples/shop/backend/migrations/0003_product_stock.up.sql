-- Expand only: a nullable column (NULL: not counted yet). Code written for 0002 never names it,
-- so the release still serving while this runs keeps working; no column is dropped or renamed.
ALTER TABLE products ADD COLUMN stock INTEGER;

UPDATE products SET stock = 40 WHERE id = 1;
UPDATE products SET stock = 12 WHERE id = 2;

-- Say so, for the backend that is still running: code written for 0002 or later works on this
-- schema (see ../../README.md, "Migrations without downtime"). The first migration that declares
-- compatibility creates the table; later ones only add their row.
CREATE TABLE IF NOT EXISTS schema_compatibility (
    revision TEXT PRIMARY KEY,
    compatible_with TEXT NOT NULL
);
INSERT INTO schema_compatibility (revision, compatible_with) VALUES ('0003', '0002');
