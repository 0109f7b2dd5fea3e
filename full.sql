--
-- PostgreSQL database dump
--

\restrict JOQpqQhbRO8jlYdWZliCUikA0vVguYMT9Kw5lL2h25hMco8GpsTa7nqDxhhwWXz

-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: s; Type: SCHEMA; Schema: -; Owner: postgres
--

CREATE SCHEMA s;


ALTER SCHEMA s OWNER TO postgres;

--
-- Name: SCHEMA s; Type: COMMENT; Schema: -; Owner: postgres
--

COMMENT ON SCHEMA s IS 'sch';


--
-- Name: mood; Type: TYPE; Schema: s; Owner: postgres
--


-- For binary upgrade, must preserve pg_type oid
SELECT pg_catalog.binary_upgrade_set_next_pg_type_oid('16410'::pg_catalog.oid);


-- For binary upgrade, must preserve pg_type array oid
SELECT pg_catalog.binary_upgrade_set_next_array_pg_type_oid('16409'::pg_catalog.oid);

CREATE TYPE s.mood AS ENUM (
);

-- For binary upgrade, must preserve pg_enum oids
SELECT pg_catalog.binary_upgrade_set_next_pg_enum_oid('16412'::pg_catalog.oid);
ALTER TYPE s.mood ADD VALUE 'a';

SELECT pg_catalog.binary_upgrade_set_next_pg_enum_oid('16414'::pg_catalog.oid);
ALTER TYPE s.mood ADD VALUE 'b';



ALTER TYPE s.mood OWNER TO postgres;

--
-- Name: f(integer); Type: FUNCTION; Schema: s; Owner: postgres
--

CREATE FUNCTION s.f(integer) RETURNS integer
    LANGUAGE sql
    AS $_$select $1$_$;


ALTER FUNCTION s.f(integer) OWNER TO postgres;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: a; Type: TABLE; Schema: s; Owner: postgres
--


-- For binary upgrade, must preserve pg_type oid
SELECT pg_catalog.binary_upgrade_set_next_pg_type_oid('16387'::pg_catalog.oid);


-- For binary upgrade, must preserve pg_type array oid
SELECT pg_catalog.binary_upgrade_set_next_array_pg_type_oid('16386'::pg_catalog.oid);


-- For binary upgrade, must preserve pg_class oids and relfilenodes
SELECT pg_catalog.binary_upgrade_set_next_heap_pg_class_oid('16385'::pg_catalog.oid);
SELECT pg_catalog.binary_upgrade_set_next_heap_relfilenode('16385'::pg_catalog.oid);
SELECT pg_catalog.binary_upgrade_set_next_toast_pg_class_oid('16388'::pg_catalog.oid);
SELECT pg_catalog.binary_upgrade_set_next_toast_relfilenode('16388'::pg_catalog.oid);
SELECT pg_catalog.binary_upgrade_set_next_index_pg_class_oid('16389'::pg_catalog.oid);
SELECT pg_catalog.binary_upgrade_set_next_index_relfilenode('16389'::pg_catalog.oid);

CREATE TABLE s.a (
    id integer NOT NULL,
    x text,
    z integer
);

-- For binary upgrade, set heap's relfrozenxid and relminmxid
UPDATE pg_catalog.pg_class
SET relfrozenxid = '724', relminmxid = '1'
WHERE oid = 's.a'::pg_catalog.regclass;

-- For binary upgrade, set toast's relfrozenxid and relminmxid
UPDATE pg_catalog.pg_class
SET relfrozenxid = '724', relminmxid = '1'
WHERE oid = '16388';


ALTER TABLE s.a OWNER TO postgres;

--
-- Name: TABLE a; Type: COMMENT; Schema: s; Owner: postgres
--

COMMENT ON TABLE s.a IS 'hello';


--
-- Name: b; Type: TABLE; Schema: s; Owner: postgres
--


-- For binary upgrade, must preserve pg_type oid
SELECT pg_catalog.binary_upgrade_set_next_pg_type_oid('16395'::pg_catalog.oid);


-- For binary upgrade, must preserve pg_type array oid
SELECT pg_catalog.binary_upgrade_set_next_array_pg_type_oid('16394'::pg_catalog.oid);


-- For binary upgrade, must preserve pg_class oids and relfilenodes
SELECT pg_catalog.binary_upgrade_set_next_heap_pg_class_oid('16393'::pg_catalog.oid);
SELECT pg_catalog.binary_upgrade_set_next_heap_relfilenode('16393'::pg_catalog.oid);

CREATE TABLE s.b (
    id integer,
    y integer NOT NULL
);

-- For binary upgrade, set heap's relfrozenxid and relminmxid
UPDATE pg_catalog.pg_class
SET relfrozenxid = '724', relminmxid = '1'
WHERE oid = 's.b'::pg_catalog.regclass;


ALTER TABLE s.b OWNER TO postgres;

--
-- Name: b_y_seq; Type: SEQUENCE; Schema: s; Owner: postgres
--


-- For binary upgrade, must preserve pg_class oids and relfilenodes
SELECT pg_catalog.binary_upgrade_set_next_heap_pg_class_oid('16392'::pg_catalog.oid);
SELECT pg_catalog.binary_upgrade_set_next_heap_relfilenode('16392'::pg_catalog.oid);

CREATE SEQUENCE s.b_y_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


ALTER TABLE s.b_y_seq OWNER TO postgres;

--
-- Name: b_y_seq; Type: SEQUENCE OWNED BY; Schema: s; Owner: postgres
--

ALTER SEQUENCE s.b_y_seq OWNED BY s.b.y;


--
-- Name: c; Type: TABLE; Schema: s; Owner: postgres
--


-- For binary upgrade, must preserve pg_type oid
SELECT pg_catalog.binary_upgrade_set_next_pg_type_oid('16408'::pg_catalog.oid);


-- For binary upgrade, must preserve pg_type array oid
SELECT pg_catalog.binary_upgrade_set_next_array_pg_type_oid('16407'::pg_catalog.oid);


-- For binary upgrade, must preserve pg_class oids and relfilenodes
SELECT pg_catalog.binary_upgrade_set_next_heap_pg_class_oid('16406'::pg_catalog.oid);
SELECT pg_catalog.binary_upgrade_set_next_heap_relfilenode('16406'::pg_catalog.oid);

CREATE TABLE s.c (
    q integer
);

-- For binary upgrade, set heap's relfrozenxid and relminmxid
UPDATE pg_catalog.pg_class
SET relfrozenxid = '725', relminmxid = '1'
WHERE oid = 's.c'::pg_catalog.regclass;


ALTER TABLE s.c OWNER TO postgres;

--
-- Name: v; Type: VIEW; Schema: s; Owner: postgres
--


-- For binary upgrade, must preserve pg_type oid
SELECT pg_catalog.binary_upgrade_set_next_pg_type_oid('16404'::pg_catalog.oid);


-- For binary upgrade, must preserve pg_type array oid
SELECT pg_catalog.binary_upgrade_set_next_array_pg_type_oid('16403'::pg_catalog.oid);


-- For binary upgrade, must preserve pg_class oids and relfilenodes
SELECT pg_catalog.binary_upgrade_set_next_heap_pg_class_oid('16402'::pg_catalog.oid);

CREATE VIEW s.v AS
 SELECT a.id,
    a.x
   FROM s.a;


ALTER TABLE s.v OWNER TO postgres;

--
-- Name: b y; Type: DEFAULT; Schema: s; Owner: postgres
--

ALTER TABLE ONLY s.b ALTER COLUMN y SET DEFAULT nextval('s.b_y_seq'::regclass);


--
-- Name: b_y_seq; Type: SEQUENCE SET; Schema: s; Owner: postgres
--

SELECT pg_catalog.setval('s.b_y_seq', 1, false);


--
-- Name: a a_pkey; Type: CONSTRAINT; Schema: s; Owner: postgres
--


-- For binary upgrade, must preserve pg_class oids and relfilenodes
SELECT pg_catalog.binary_upgrade_set_next_index_pg_class_oid('16390'::pg_catalog.oid);
SELECT pg_catalog.binary_upgrade_set_next_index_relfilenode('16390'::pg_catalog.oid);

ALTER TABLE ONLY s.a
    ADD CONSTRAINT a_pkey PRIMARY KEY (id);


--
-- Name: b b_id_fkey; Type: FK CONSTRAINT; Schema: s; Owner: postgres
--

ALTER TABLE ONLY s.b
    ADD CONSTRAINT b_id_fkey FOREIGN KEY (id) REFERENCES s.a(id);


--
-- PostgreSQL database dump complete
--

\unrestrict JOQpqQhbRO8jlYdWZliCUikA0vVguYMT9Kw5lL2h25hMco8GpsTa7nqDxhhwWXz

