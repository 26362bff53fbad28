DROP TABLE transfers; DROP TABLE transfer_partners;
