-- What the ticket shop sells.
CREATE TABLE IF NOT EXISTS tickets.ticket_types (
  id INT AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(100) NOT NULL,
  price_cents INT NOT NULL
);
INSERT INTO tickets.ticket_types (id, name, price_cents) VALUES
  (1, 'Early bird', 19900),
  (2, 'Regular', 29900);
