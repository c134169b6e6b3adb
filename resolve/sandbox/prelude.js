// prelude.js builds the browser stubs of the sandbox and hardens the built-ins, once per page,
// before the page's scripts. It is called with `host`, the Go helpers (navigation recorder,
// element lookups, queue), and returns the hook Go calls when the document is parsed.
//
// Everything the stubs and guards rely on is captured here, before any page script runs, so a
// script that replaces a global or a prototype method only changes what it sees itself.
(function (host) {
	'use strict';
	var G = globalThis;
	var O = Object, S = String, N = Number, Sym = Symbol;
	var defineProperty = O.defineProperty, create = O.create, freeze = O.freeze,
		getOwnPropertyNames = O.getOwnPropertyNames;
	var apply = Reflect.apply, isArray = Array.isArray;
	var MAX_STR = host.maxString, MAX_ARR = host.maxArray;
	var nav = host.nav, later = host.later;
	function noop() {}

	function hide(obj, name, value) {
		defineProperty(obj, name, { value: value, writable: true, configurable: true, enumerable: false });
	}

	// ---- Guards ------------------------------------------------------------------------------
	// goja has no memory limit and cannot interrupt a native built-in, so the built-ins whose
	// work or output is chosen by one argument (a count, a length) check it first. Each guard
	// calls the original through the captured Reflect.apply.

	function tooBig(what) { throw new RangeError('sandbox: ' + what + ' over the limit'); }
	function lengthOf(o) {
		if (o === null || o === undefined) return 0;
		var n = +O(o).length;
		return n > 0 ? n : 0;
	}
	function checkLength(o) { if (lengthOf(o) > MAX_ARR) tooBig('array length'); }
	function guard(obj, name, check) {
		var orig = obj[name];
		if (typeof orig !== 'function') return undefined;
		var wrapped = function () {
			check(this, arguments);
			return apply(orig, this, arguments);
		};
		defineProperty(wrapped, 'name', { value: name });
		hide(obj, name, wrapped);
		return wrapped;
	}

	// Typed arrays and buffers allocate their whole length up front (new ArrayBuffer(1e12) is
	// a fatal out-of-memory in Go, not an exception), and no redirect needs them.
	['ArrayBuffer', 'SharedArrayBuffer', 'DataView', 'Int8Array', 'Uint8Array', 'Uint8ClampedArray',
		'Int16Array', 'Uint16Array', 'Int32Array', 'Uint32Array', 'Float16Array', 'Float32Array',
		'Float64Array', 'BigInt64Array', 'BigUint64Array', 'Atomics', 'WebAssembly'].forEach(function (n) {
		delete G[n];
	});

	// Array methods loop natively up to `this.length`; concat also over its arguments' lengths.
	var AP = Array.prototype;
	getOwnPropertyNames(AP).forEach(function (name) {
		if (name === 'constructor' || name === 'length' || name === 'join' || name === 'toString' ||
			name === 'toLocaleString' || typeof AP[name] !== 'function') return;
		guard(AP, name, name === 'concat' ? checkConcat : name === 'flat' || name === 'flatMap' ? checkFlat : checkLength);
	});
	// concat's result is as long as all its arrays together (one array passed 1e6 times is
	// cheap to pass and 1e12 elements long).
	function checkConcat(self, args) {
		var total = lengthOf(self);
		for (var i = 0; i < args.length; i++) total += isArray(args[i]) ? lengthOf(args[i]) : 1;
		if (total > MAX_ARR) tooBig('array length');
	}
	// flat's result is counted by walking to the requested depth, in (interruptible) JavaScript.
	function checkFlat(self, args) {
		var depth = args.length && args[0] !== undefined && typeof args[0] !== 'function' ? +args[0] : 1, total = 0;
		(function count(a, d) {
			var n = lengthOf(a);
			if (n > MAX_ARR) tooBig('array length');
			for (var i = 0; i < n; i++) {
				var e = a[i];
				if (d > 0 && isArray(e)) count(e, d - 1);
				else if (++total > MAX_ARR) tooBig('array length');
			}
		})(O(self), depth > 0 ? depth : 0);
	}
	// Spread, for-of, Array.from, new Set(…) iterate through @@iterator.
	hide(AP, Sym.iterator, AP.values);

	// join builds its parts in JavaScript (each element's toString is a counted, interruptible
	// call, so deep nesting hits the call-stack cap) and checks the total before the native join.
	var nativeJoin = AP.join, joining = [];
	function join(sep) {
		var o = O(this), n = lengthOf(o);
		if (n > MAX_ARR) tooBig('array length');
		sep = sep === undefined ? ',' : S(sep);
		for (var j = 0; j < joining.length; j++) if (joining[j] === o) return ''; // a cycle, as browsers
		var parts = [], total = n > 0 ? (n - 1) * sep.length : 0;
		joining[joining.length] = o;
		try {
			for (var i = 0; i < n; i++) {
				var e = o[i];
				var s = e === undefined || e === null ? '' : S(e);
				total += s.length;
				if (total > MAX_STR) tooBig('string length');
				parts[i] = s;
			}
		} finally {
			joining.length--;
		}
		return apply(nativeJoin, parts, [sep]);
	}
	hide(AP, 'join', join);
	var arrayToString = function toString() { return typeof this.join === 'function' ? this.join() : O.prototype.toString.call(this); };
	hide(AP, 'toString', arrayToString);
	hide(AP, 'toLocaleString', arrayToString);

	guard(Array, 'from', function (self, args) { if (typeof args[0] === 'object' || typeof args[0] === 'string') checkLength(args[0]); });
	guard(Function.prototype, 'apply', function (self, args) { checkLength(args[1]); });
	guard(Reflect, 'apply', function (self, args) { checkLength(args[2]); });
	guard(Reflect, 'construct', function (self, args) { checkLength(args[1]); });

	// Strings grown with + are bounded only by the budget (doubling reaches 1e8 characters in
	// well under 100 ms), so the built-ins that allocate per character or per match refuse
	// subjects longer than MAX_STR, and those whose output size an argument chooses check it.
	var SP = S.prototype;
	function strLen(self) { return S(self).length; }
	function checkSubject(self) { if (strLen(self) > MAX_STR) tooBig('string length'); }
	function checkArg0(self, args) { if (strLen(args[0]) > MAX_STR) tooBig('string length'); }
	['split', 'match', 'matchAll', 'normalize', 'localeCompare'].forEach(function (n) { guard(SP, n, checkSubject); });
	guard(SP, Sym.iterator, checkSubject);
	guard(SP, 'concat', function (self, args) {
		var total = strLen(self);
		for (var i = 0; i < args.length; i++) total += strLen(args[i]);
		if (total > MAX_STR) tooBig('string length');
	});
	var RP = RegExp.prototype;
	[Sym.match, Sym.matchAll, Sym.replace, Sym.split].forEach(function (sym) { guard(RP, sym, checkArg0); });
	['escape', 'unescape', 'encodeURI', 'encodeURIComponent', 'decodeURI', 'decodeURIComponent'].forEach(function (n) { guard(G, n, checkArg0); });
	guard(JSON, 'parse', checkArg0);
	// Own keys of a string are one per character.
	function checkKeys(self, args) { if (typeof args[0] === 'string' || args[0] instanceof S) checkArg0(self, args); }
	['keys', 'values', 'entries', 'getOwnPropertyNames', 'getOwnPropertyDescriptors'].forEach(function (n) { guard(O, n, checkKeys); });
	guard(O, 'assign', function (self, args) { for (var i = 1; i < args.length; i++) checkKeys(self, [args[i]]); });
	guard(Reflect, 'ownKeys', checkKeys);
	guard(SP, 'repeat', function (self, args) {
		var n = +args[0];
		if (n > 0 && strLen(self) * n > MAX_STR) tooBig('string length');
	});
	function checkPad(self, args) { if (+args[0] > MAX_STR) tooBig('string length'); }
	guard(SP, 'padStart', checkPad);
	guard(SP, 'padEnd', checkPad);
	// replace/replaceAll: a string replacement adds at most its length per match (one more match
	// than characters) plus, per '$' pattern, at most the subject (captures of disjoint matches
	// are disjoint) — except $` and $', which copy a prefix or suffix per match. A function
	// replacement's results are counted as they come back.
	function guardReplace(name) {
		var orig = SP[name];
		if (typeof orig !== 'function') return;
		hide(SP, name, function (pattern, replacement) {
			var subject = S(this), n = subject.length, args = [pattern, replacement];
			if (n > MAX_STR) tooBig('string length');
			if (typeof replacement === 'function') {
				var fn = replacement, total = n;
				args[1] = function () {
					var r = S(apply(fn, undefined, arguments));
					total += r.length;
					if (total > MAX_STR) tooBig('string length');
					return r;
				};
			} else {
				var r = S(replacement), dollars = r.split('$').length - 1, bound;
				if (r.indexOf('$`') >= 0 || r.indexOf("$'") >= 0) bound = (n + 1) * (n + 1) * dollars;
				else bound = n + (n + 1) * r.length + dollars * n;
				if (bound > MAX_STR) tooBig('string length');
				args[1] = r;
			}
			return apply(orig, subject, args);
		});
	}
	guardReplace('replace');
	guardReplace('replaceAll');

	// JSON.stringify walks natively: check lengths and sizes in JavaScript first, where depth is
	// bounded by the call-stack cap and loops are interruptible.
	var stringify = JSON.stringify, objectKeys = O.keys;
	hide(JSON, 'stringify', function stringifyGuarded(value) {
		// Every visit is charged (a shared object is written out each time it appears); the
		// ancestors are kept only to stop at cycles, which stringify itself reports.
		var budget = MAX_STR, ancestors = [];
		(function walk(v) {
			if (typeof v === 'string') { budget -= v.length + 2; if (budget < 0) tooBig('string length'); return; }
			budget -= 4;
			if (budget < 0) tooBig('string length');
			if (typeof v !== 'object' || v === null) return;
			for (var i = 0; i < ancestors.length; i++) if (ancestors[i] === v) return;
			ancestors[ancestors.length] = v;
			if (isArray(v)) {
				var n = lengthOf(v);
				if (n > MAX_ARR) tooBig('array length');
				for (var k = 0; k < n; k++) walk(v[k]);
			} else {
				var ks = objectKeys(v);
				for (var m = 0; m < ks.length; m++) { budget -= ks[m].length + 3; walk(v[ks[m]]); }
			}
			ancestors.length--;
		})(value);
		return apply(stringify, JSON, arguments);
	});

	// ---- Navigation ----------------------------------------------------------------------------

	function go(url) { nav(S(url)); }
	var L = host.loc;
	var loc = {};
	function locPart(name, onSet) {
		defineProperty(loc, name, { get: function () { return L[name]; }, set: onSet || noop, enumerable: true });
	}
	locPart('href', go);
	locPart('protocol');
	locPart('host');
	locPart('hostname');
	locPart('port');
	locPart('origin');
	locPart('hash'); // a fragment change does not leave the document
	// Setting pathname or search navigates to the page URL with that part replaced.
	locPart('pathname', function (v) {
		v = S(v);
		go(L.origin + (v.charAt(0) === '/' ? '' : '/') + v + L.search);
	});
	locPart('search', function (v) {
		v = S(v);
		go(L.origin + L.pathname + (v === '' || v.charAt(0) === '?' ? '' : '?') + v);
	});
	loc.assign = go;
	loc.replace = go;
	loc.reload = noop;
	loc.toString = function () { return L.href; };
	loc.valueOf = function () { return loc; };
	freeze(loc);

	// location on window and document: non-configurable accessors, so a script can neither
	// redefine them nor hide a navigation behind its own getter.
	function defineLocation(obj) {
		defineProperty(obj, 'location', { get: function () { return loc; }, set: go, enumerable: true, configurable: false });
	}
	defineLocation(G);

	// ---- Events --------------------------------------------------------------------------------

	function Event(type, init) {
		this.type = S(type);
		this.bubbles = !!(init && init.bubbles);
		this.defaultPrevented = false;
	}
	Event.prototype.preventDefault = function () { this.defaultPrevented = true; };
	Event.prototype.stopPropagation = noop;
	Event.prototype.stopImmediatePropagation = noop;
	function listenersOf(o, type) {
		var all = o[LISTENERS] || (hide(o, LISTENERS, create(null)), o[LISTENERS]);
		return all[type] || (all[type] = []);
	}
	var LISTENERS = Sym('listeners');
	function addEventListener(type, fn) {
		if (typeof fn === 'function' || (fn && typeof fn.handleEvent === 'function')) {
			var ls = listenersOf(this, S(type));
			ls[ls.length] = fn;
			if (loaded && (this === G || this === doc) && isLoadEvent(type)) later(callListener, this, fn, new Event(type));
		}
	}
	function removeEventListener(type, fn) {
		var ls = listenersOf(this, S(type));
		for (var i = 0; i < ls.length; i++) if (ls[i] === fn) { ls.splice(i, 1); return; }
	}
	function callListener(fn, ev) {
		if (typeof fn === 'function') return fn.call(this, ev);
		return fn.handleEvent(ev);
	}
	function dispatch(target, ev) {
		var h = target['on' + ev.type];
		if (typeof h === 'function' && h.call(target, ev) === false) ev.defaultPrevented = true;
		var ls = listenersOf(target, ev.type).slice();
		for (var i = 0; i < ls.length; i++) callListener.call(target, ls[i], ev);
	}
	function dispatchEvent(ev) {
		if (ev && ev.type === 'click' && typeof this.click === 'function') this.click();
		else if (ev && ev.type) dispatch(this, ev);
		return true;
	}
	function isLoadEvent(t) { return t === 'load' || t === 'DOMContentLoaded' || t === 'readystatechange' || t === 'pageshow'; }

	// ---- Elements ------------------------------------------------------------------------------

	var DATA = Sym('element');
	var elements = create(null); // index -> element, so lookups return the same object
	var EP = {};
	function element(i) {
		var e = elements[i];
		if (e) return e;
		var attrs = create(null), kv = host.attrs(i);
		for (var k = 0; k + 1 < kv.length; k += 2) attrs[kv[k]] = kv[k + 1];
		e = newElement(host.tag(i), attrs, i);
		elements[i] = e;
		return e;
	}
	function newElement(tag, attrs, index) {
		var e = create(EP);
		hide(e, DATA, { i: index, tag: S(tag).toUpperCase(), attrs: attrs });
		e.style = {};
		e.dataset = {};
		for (var name in attrs) {
			if (name.indexOf('data-') === 0) {
				e.dataset[name.slice(5).replace(/-([a-z])/g, function (m, c) { return c.toUpperCase(); })] = attrs[name];
			}
		}
		return e;
	}
	function elementList(idx) {
		var out = [];
		for (var k = 0; k < idx.length; k++) out[k] = element(idx[k]);
		return out;
	}
	function data(e) {
		var d = e && e[DATA];
		if (!d) throw new TypeError('Illegal invocation');
		return d;
	}
	function reflect(prop, attr) {
		defineProperty(EP, prop, {
			get: function () { var a = data(this).attrs[attr]; return a === undefined ? '' : a; },
			set: function (v) { data(this).attrs[attr] = S(v); },
		});
	}
	reflect('id', 'id');
	reflect('className', 'class');
	reflect('name', 'name');
	reflect('type', 'type');
	reflect('title', 'title');
	reflect('target', 'target');
	reflect('rel', 'rel');
	reflect('method', 'method');
	reflect('action', 'action');
	reflect('src', 'src');
	// href is the attribute as written (a browser would resolve it; the caller does).
	reflect('href', 'href');
	defineProperty(EP, 'tagName', { get: function () { return data(this).tag; } });
	defineProperty(EP, 'nodeName', { get: function () { return data(this).tag; } });
	defineProperty(EP, 'nodeType', { value: 1 });
	function lazy(prop, load) {
		defineProperty(EP, prop, {
			get: function () {
				var d = data(this);
				if (!(prop in d)) d[prop] = load(d);
				return d[prop];
			},
			set: function (v) { data(this)[prop] = S(v); },
		});
	}
	function text(d) { return d.i >= 0 ? host.text(d.i) : ''; }
	lazy('textContent', text);
	lazy('innerText', function (d) { return 'textContent' in d ? d.textContent : text(d); });
	lazy('innerHTML', function (d) { return d.i >= 0 ? host.html(d.i) : ''; });
	lazy('value', function (d) {
		if (d.tag === 'TEXTAREA') return text(d);
		var v = d.attrs.value;
		return v === undefined ? '' : v;
	});
	defineProperty(EP, 'checked', {
		get: function () { var d = data(this); return 'isChecked' in d ? d.isChecked : 'checked' in d.attrs; },
		set: function (v) { data(this).isChecked = !!v; },
	});
	defineProperty(EP, 'outerHTML', {
		get: function () {
			var d = data(this), t = d.tag.toLowerCase(), s = '<' + t;
			for (var a in d.attrs) s += ' ' + a + '="' + d.attrs[a].replace(/&/g, '&amp;').replace(/"/g, '&quot;') + '"';
			return s + '>' + this.innerHTML + '</' + t + '>';
		},
	});
	defineProperty(EP, 'parentNode', { get: function () { return doc.body; } });
	defineProperty(EP, 'parentElement', { get: function () { return doc.body; } });
	EP.children = [];
	EP.childNodes = [];
	EP.firstChild = null;
	EP.lastChild = null;
	EP.nextSibling = null;
	EP.previousSibling = null;
	EP.classList = { add: noop, remove: noop, toggle: noop, contains: function () { return false; } };
	EP.getAttribute = function (name) {
		var v = data(this).attrs[S(name).toLowerCase()];
		return v === undefined ? null : v;
	};
	EP.setAttribute = function (name, v) { data(this).attrs[S(name).toLowerCase()] = S(v); };
	EP.removeAttribute = function (name) { delete data(this).attrs[S(name).toLowerCase()]; };
	EP.hasAttribute = function (name) { return S(name).toLowerCase() in data(this).attrs; };
	EP.getAttributeNames = function () { return O.keys(data(this).attrs); };
	EP.querySelector = function (sel) {
		var d = data(this);
		if (d.i < 0) return null;
		var r = host.query(S(sel), d.i, false);
		return r.length ? element(r[0]) : null;
	};
	EP.querySelectorAll = function (sel) {
		var d = data(this);
		return d.i < 0 ? [] : elementList(host.query(S(sel), d.i, true));
	};
	EP.getElementsByTagName = function (t) { return this.querySelectorAll(S(t)); };
	EP.getElementsByClassName = function (c) { return this.querySelectorAll(classSelector(c)); };
	function identity(x) { return x; }
	EP.appendChild = identity;
	EP.removeChild = identity;
	EP.insertBefore = identity;
	EP.replaceChild = identity;
	EP.append = noop;
	EP.prepend = noop;
	EP.remove = noop;
	EP.replaceWith = noop;
	EP.cloneNode = function () { var d = data(this), a = create(null); for (var k in d.attrs) a[k] = d.attrs[k]; return newElement(d.tag, a, d.i); };
	EP.focus = noop;
	EP.blur = noop;
	EP.select = noop;
	EP.scrollIntoView = noop;
	EP.getBoundingClientRect = function () { return { top: 0, left: 0, right: 0, bottom: 0, width: 0, height: 0, x: 0, y: 0 }; };
	EP.addEventListener = addEventListener;
	EP.removeEventListener = removeEventListener;
	EP.dispatchEvent = dispatchEvent;
	// click() runs the click handlers and, unless one prevents it, follows the element's href;
	// a submit button submits its form.
	EP.click = function () {
		var d = data(this), ev = new Event('click');
		ev.target = this;
		dispatch(this, ev);
		if (ev.defaultPrevented) return;
		var href = this.href;
		if (href) { go(href); return; }
		if ((d.tag === 'BUTTON' && this.type !== 'button') || (d.tag === 'INPUT' && /^(submit|image)$/i.test(this.type))) {
			var form = this.form;
			if (form) form.submit();
		}
	};
	defineProperty(EP, 'form', {
		get: function () {
			var d = data(this);
			if (d.i < 0) return null;
			var forms = host.query('form', -1, true);
			for (var k = 0; k < forms.length; k++) {
				var inside = host.query('*', forms[k], true);
				for (var m = 0; m < inside.length; m++) if (inside[m] === d.i) return element(forms[k]);
			}
			return null;
		},
	});
	// submit() navigates to the form's action; a GET form carries its named fields as the
	// query, with the values the script may have set.
	EP.submit = function () {
		var d = data(this);
		if (d.tag !== 'FORM') return;
		var action = this.getAttribute('action');
		if (action === null || action === '') action = L.href;
		if (S(this.getAttribute('method') || 'get').toLowerCase() !== 'get') { go(action); return; }
		var fields = this.querySelectorAll('input,select,textarea'), q = [];
		for (var k = 0; k < fields.length; k++) {
			var f = fields[k], n = f.name, t = S(f.type).toLowerCase();
			if (!n || f.hasAttribute('disabled') || t === 'submit' || t === 'button' || t === 'image' ||
				((t === 'checkbox' || t === 'radio') && !f.checked)) continue;
			q[q.length] = encodeURIComponent(n) + '=' + encodeURIComponent(f.value);
		}
		var hash = action.indexOf('#');
		if (hash >= 0) action = action.slice(0, hash);
		var qm = action.indexOf('?');
		if (qm >= 0) action = action.slice(0, qm);
		go(action + '?' + q.join('&'));
	};
	EP.requestSubmit = EP.submit;

	function classSelector(c) {
		return S(c).trim().split(/\s+/).map(function (x) { return '.' + x; }).join('');
	}
	function elementAt(i) { return i >= 0 ? element(i) : newElement('div', create(null), -1); }

	// ---- document --------------------------------------------------------------------------------

	var doc = {
		nodeType: 9,
		readyState: 'loading',
		referrer: '',
		title: host.title,
		characterSet: 'UTF-8',
		contentType: 'text/html',
		hidden: false,
		visibilityState: 'visible',
		URL: L.href,
		documentURI: L.href,
		domain: L.hostname,
		defaultView: G,
		getElementById: function (id) {
			var i = host.byId(S(id));
			return i < 0 ? null : element(i);
		},
		querySelector: function (sel) {
			var r = host.query(S(sel), -1, false);
			return r.length ? element(r[0]) : null;
		},
		querySelectorAll: function (sel) { return elementList(host.query(S(sel), -1, true)); },
		getElementsByTagName: function (t) { return this.querySelectorAll(S(t)); },
		getElementsByClassName: function (c) { return this.querySelectorAll(classSelector(c)); },
		getElementsByName: function (n) { return this.querySelectorAll('[name="' + S(n).replace(/["\]]/g, '') + '"]'); },
		createElement: function (tag) { return newElement(tag, create(null), -1); },
		createElementNS: function (ns, tag) { return newElement(tag, create(null), -1); },
		createTextNode: function (t) { return { nodeType: 3, textContent: S(t) }; },
		createDocumentFragment: function () { return newElement('#fragment', create(null), -1); },
		createEvent: function () { var e = new Event(''); e.initEvent = function (t) { this.type = S(t); }; return e; },
		write: noop,
		writeln: noop,
		open: noop,
		close: noop,
		hasFocus: function () { return true; },
		execCommand: function () { return false; },
		addEventListener: addEventListener,
		removeEventListener: removeEventListener,
		dispatchEvent: dispatchEvent,
	};
	doc.documentElement = elementAt(host.root);
	doc.head = elementAt(host.head);
	doc.body = elementAt(host.body);
	defineProperty(doc, 'forms', { get: function () { return this.querySelectorAll('form'); } });
	defineProperty(doc, 'links', { get: function () { return this.querySelectorAll('a[href],area[href]'); } });
	defineProperty(doc, 'scripts', { get: function () { return this.querySelectorAll('script'); } });
	// No storage: cookies read empty and writes are dropped.
	defineProperty(doc, 'cookie', { get: function () { return ''; }, set: noop, enumerable: true });
	defineLocation(doc);

	// ---- window ------------------------------------------------------------------------------------

	function constant(name, value) {
		defineProperty(G, name, { value: value, writable: true, configurable: true, enumerable: true });
	}
	// window, self, top, parent and frames are the global object itself, so window.location
	// and top.location reach the same accessor.
	['window', 'self', 'top', 'parent', 'frames'].forEach(function (n) { constant(n, G); });
	constant('document', doc);
	constant('navigator', {
		userAgent: 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36',
		appName: 'Netscape', appVersion: '5.0', platform: 'Linux x86_64', vendor: 'Google Inc.',
		language: 'en-US', languages: ['en-US', 'en'], cookieEnabled: true, onLine: true,
		webdriver: false, doNotTrack: null, hardwareConcurrency: 4, maxTouchPoints: 0,
		plugins: [], mimeTypes: [], sendBeacon: function () { return true; },
	});
	constant('screen', { width: 1920, height: 1080, availWidth: 1920, availHeight: 1040, colorDepth: 24, pixelDepth: 24 });
	constant('history', { length: 1, state: null, pushState: noop, replaceState: noop, back: noop, forward: noop, go: noop });
	function storage() {
		return { length: 0, getItem: function () { return null; }, setItem: noop, removeItem: noop, clear: noop, key: function () { return null; } };
	}
	constant('localStorage', storage());
	constant('sessionStorage', storage());
	var silent = {};
	['log', 'info', 'warn', 'error', 'debug', 'trace', 'dir', 'table', 'group', 'groupEnd', 'time', 'timeEnd', 'assert', 'clear', 'count']
		.forEach(function (n) { silent[n] = noop; });
	constant('console', silent);
	constant('name', '');
	constant('closed', false);
	constant('opener', null);
	constant('innerWidth', 1920);
	constant('innerHeight', 1080);
	constant('outerWidth', 1920);
	constant('outerHeight', 1080);
	constant('devicePixelRatio', 1);
	constant('scrollX', 0);
	constant('scrollY', 0);
	constant('pageXOffset', 0);
	constant('pageYOffset', 0);
	constant('isSecureContext', L.protocol === 'https:');
	constant('origin', L.origin);
	constant('onload', null);
	['alert', 'print', 'focus', 'blur', 'close', 'stop', 'scrollTo', 'scrollBy', 'scroll', 'postMessage', 'moveTo', 'resizeTo']
		.forEach(function (n) { constant(n, noop); });
	constant('confirm', function () { return true; });
	constant('prompt', function () { return null; });
	constant('addEventListener', addEventListener);
	constant('removeEventListener', removeEventListener);
	constant('dispatchEvent', dispatchEvent);
	constant('getComputedStyle', function () { return { getPropertyValue: function () { return ''; } }; });
	constant('matchMedia', function (q) { return { matches: false, media: S(q), addListener: noop, removeListener: noop, addEventListener: noop, removeEventListener: noop }; });
	var t0 = Date.now();
	constant('performance', { now: function () { return Date.now() - t0; }, timing: {}, mark: noop, measure: noop });
	constant('Event', Event);
	constant('CustomEvent', Event);
	constant('MouseEvent', Event);
	constant('Image', function Image() { return newElement('img', create(null), -1); });
	// No network: requests are accepted and never answered.
	function XMLHttpRequest() { this.readyState = 0; this.status = 0; this.responseText = ''; }
	['open', 'send', 'setRequestHeader', 'abort', 'overrideMimeType', 'addEventListener', 'removeEventListener']
		.forEach(function (n) { XMLHttpRequest.prototype[n] = noop; });
	XMLHttpRequest.prototype.getResponseHeader = function () { return null; };
	XMLHttpRequest.prototype.getAllResponseHeaders = function () { return ''; };
	constant('XMLHttpRequest', XMLHttpRequest);
	constant('fetch', function () { return new Promise(noop); });
	// window.open(url) navigates; the returned window's location can be set too (popunders
	// open a blank window and then point it somewhere).
	constant('open', function (url) {
		if (url !== undefined && url !== null) go(url);
		var w = { closed: false, close: noop, focus: noop, blur: noop, document: { write: noop, writeln: noop, close: noop, open: noop } };
		defineProperty(w, 'location', {
			get: function () { return { href: 'about:blank', assign: go, replace: go, reload: noop, toString: function () { return 'about:blank'; } }; },
			set: go,
		});
		return w;
	});

	// ---- jQuery-ish --------------------------------------------------------------------------------
	// Enough for $(fn), $(document).ready(fn), $(window).on('load', fn) and reading or clicking
	// elements; a page that inlines the real jQuery replaces it.

	var ready = [];
	function onReady(fn) {
		if (typeof fn !== 'function') return;
		if (loaded) later(fn, doc, jq);
		else ready[ready.length] = fn;
	}
	function wrap(els) {
		var w = create(JQ);
		for (var k = 0; k < els.length; k++) w[k] = els[k];
		w.length = els.length;
		return w;
	}
	var JQ = {
		jquery: '3.7.1-sandbox',
		ready: function (fn) { onReady(fn); return this; },
		on: function (type, sel, fn) {
			fn = typeof sel === 'function' ? sel : fn;
			type = S(type);
			if (this[0] === G || this[0] === doc) {
				if (isLoadEvent(type) || type === 'ready') onReady(fn);
			} else {
				for (var k = 0; k < this.length; k++) if (this[k] && this[k].addEventListener) this[k].addEventListener(type, fn);
			}
			return this;
		},
		each: function (fn) { for (var k = 0; k < this.length; k++) fn.call(this[k], k, this[k]); return this; },
		attr: function (n, v) {
			if (v !== undefined) return this.each(function () { if (this.setAttribute) this.setAttribute(n, v); });
			return this[0] && this[0].getAttribute ? (this[0].getAttribute(n) === null ? undefined : this[0].getAttribute(n)) : undefined;
		},
		prop: function (n, v) {
			if (v !== undefined) return this.each(function () { this[n] = v; });
			return this[0] ? this[0][n] : undefined;
		},
		data: function (n) { return this[0] && this[0].dataset ? this[0].dataset[n] : undefined; },
		val: function (v) { return v === undefined ? (this[0] ? this[0].value : undefined) : this.prop('value', v); },
		text: function (v) { return v === undefined ? (this[0] ? this[0].textContent : '') : this.prop('textContent', v); },
		html: function (v) { return v === undefined ? (this[0] ? this[0].innerHTML : undefined) : this.prop('innerHTML', v); },
		click: function (fn) {
			if (typeof fn === 'function') return this.on('click', fn);
			return this.each(function () { if (this.click) this.click(); });
		},
		trigger: function (type) {
			if (S(type) === 'click') return this.click();
			if (S(type) === 'submit') return this.submit();
			return this;
		},
		submit: function () { return this.each(function () { if (this.submit) this.submit(); }); },
		find: function (sel) { return wrap(this[0] && this[0].querySelectorAll ? this[0].querySelectorAll(sel) : []); },
		first: function () { return wrap(this.length ? [this[0]] : []); },
		get: function (k) { return k === undefined ? AP.slice.call(this) : this[k]; },
		eq: function (k) { return wrap(this[k] ? [this[k]] : []); },
	};
	['hide', 'show', 'css', 'addClass', 'removeClass', 'toggleClass', 'fadeIn', 'fadeOut', 'append', 'prepend',
		'remove', 'empty', 'off', 'animate', 'stop', 'delay', 'focus', 'blur'].forEach(function (n) {
		JQ[n] = function () { return this; };
	});
	function jq(sel) {
		if (typeof sel === 'function') { onReady(sel); return wrap([doc]); }
		if (typeof sel === 'string') {
			var s = sel.trim();
			if (s.charAt(0) === '<') return wrap([]);
			return wrap(doc.querySelectorAll(s));
		}
		if (sel === null || sel === undefined) return wrap([]);
		if (typeof sel.length === 'number' && sel !== G) return wrap(sel);
		return wrap([sel]);
	}
	function deferred() {
		var d = {};
		['done', 'fail', 'always', 'then', 'catch', 'finally'].forEach(function (n) { d[n] = function () { return d; }; });
		return d;
	}
	jq.fn = JQ;
	jq.ajax = deferred;
	jq.get = deferred;
	jq.post = deferred;
	jq.getJSON = deferred;
	jq.each = function (o, fn) { for (var k in o) if (fn.call(o[k], k, o[k]) === false) break; return o; };
	jq.trim = function (s) { return S(s).trim(); };
	jq.noConflict = function () { return jq; };
	constant('jQuery', jq);
	constant('$', jq);

	// ---- load ----------------------------------------------------------------------------------------

	var loaded = false;
	return {
		// fire is called by Go after the last script: it queues the callbacks a browser runs
		// once the document is parsed and loaded, behind the timers already due.
		fire: function () {
			loaded = true;
			doc.readyState = 'interactive';
			var dcl = new Event('DOMContentLoaded');
			var ls = listenersOf(doc, 'DOMContentLoaded');
			for (var k = 0; k < ls.length; k++) later(callListener, doc, ls[k], dcl);
			for (var r = 0; r < ready.length; r++) later(ready[r], doc, jq);
			later(function () {
				doc.readyState = 'complete';
				var rs = new Event('readystatechange');
				if (typeof doc.onreadystatechange === 'function') later(doc.onreadystatechange, doc, rs);
				var rl = listenersOf(doc, 'readystatechange');
				for (var i = 0; i < rl.length; i++) later(callListener, doc, rl[i], rs);
				var load = new Event('load');
				if (typeof G.onload === 'function') later(G.onload, G, load);
				if (host.bodyOnload) later(host.bodyOnload);
				var wl = listenersOf(G, 'load');
				for (var j = 0; j < wl.length; j++) later(callListener, G, wl[j], load);
				var ps = listenersOf(G, 'pageshow');
				for (var m = 0; m < ps.length; m++) later(callListener, G, ps[m], new Event('pageshow'));
			});
		},
	};
})
