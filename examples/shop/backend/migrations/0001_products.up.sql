-- The product catalogue, with a few demo products.
CREATE TABLE products (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0)
);

INSERT INTO products (id, name, description, price_cents) VALUES
    (1, 'Canvas tote', 'Sturdy bag; holds a week of groceries.', 1800),
    (2, 'Enamel mug', 'Keeps coffee warm for a standup or two.', 1200),
    (3, 'Deck of cards', 'Fifty-two cards and two jokers.', 700);
