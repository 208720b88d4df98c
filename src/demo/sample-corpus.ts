import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { mulberry32 } from '../seeded-random.js';

/**
 * The sample corpus `embedq demo` embeds: realistic multilingual lines on eight topics, built from
 * phrase banks with a seeded PRNG, so every run writes the same bytes. Each topic's lines reuse its
 * vocabulary, so their (emulated) embeddings cluster and the demo queries find on-topic neighbours.
 *
 * A bank is a list of slots, each slot a `|`-separated list of alternatives; a sentence is one
 * alternative per slot, joined with spaces (with nothing for Chinese and Japanese).
 */

const TOPICS = ['cooking', 'travel', 'software', 'finance', 'health', 'astronomy', 'football', 'gardening'] as const;
const CATEGORIES = ['restaurant', 'hotel', 'product', 'app'] as const;

type Topic = (typeof TOPICS)[number];
type Category = (typeof CATEGORIES)[number];

interface Language {
  code: 'en' | 'zh' | 'es' | 'fr' | 'de' | 'ja';
  /** Share of the lines in this language. */
  share: number;
  cjk: boolean;
  /** Optional openings of an article sentence (empty alternatives mean none). */
  leadIns: string;
  topics: Record<Topic, readonly string[]>;
  /** Per category: who went where / bought what, praise, complaints. */
  reviews: Record<Category, readonly [targets: string, good: string, bad: string]>;
  /** Rating phrases for one to five stars. */
  stars: readonly [string, string, string, string, string];
  /** Opens the complaint of a mixed (three-star) review. */
  however: string;
}

const EN: Language = {
  code: 'en', share: 0.55, cjk: false,
  leadIns: '||||In my experience, |These days, |Generally, |As a rule, |Surprisingly, ',
  topics: {
    cooking: [
      'home cooks|professional chefs|busy parents|food bloggers|cooking teachers|my grandparents|restaurant line cooks|college students',
      'usually cook|carefully season|slowly simmer|like to prepare|quickly stir-fry|patiently steam|gently reheat|often serve',
      'fluffy jasmine rice|a pot of brown rice|sticky short-grain rice|garlic and onions|chicken thighs|a big batch of tomato sauce|seasonal vegetables|leftover fried rice',
      'over low heat with the lid on|in a heavy cast-iron pot|with a pinch of salt and a little butter|for about twenty minutes|before serving dinner to the family|using a simple recipe from a cookbook|in a rice cooker on weeknights|until everything smells fragrant',
    ],
    travel: [
      'backpackers|budget travelers|families on holiday|tour guides|solo travelers|business travelers|many tourists|train enthusiasts',
      'like to explore|often recommend|plan trips to|take the night train to|fly cheaply to|spend a week in|return every year to|write travel blogs about',
      "Kyoto's old town|the beaches of Portugal|mountain villages in Yunnan|the museums of Paris|Lisbon and Porto|national parks in Canada|the night markets of Taipei|the Swiss Alps",
      'during the rainy season|with a backpack and a paper map|when the weather is mild in spring|on a tight budget|after checking the weather forecast|with a rail pass and a carry-on suitcase|before the summer crowds arrive|while staying in cheap hostels',
    ],
    software: [
      'backend engineers|our on-call team|junior developers|senior programmers|the QA team|open-source maintainers|DevOps engineers|most software teams',
      'spent hours debugging|carefully refactored|added unit tests for|wrote a bug report about|profiled|rolled back the latest change to|reviewed the pull request for|finally fixed',
      'a memory leak in the Node.js service|the flaky integration tests|a race condition in the job queue|the slow database queries|the authentication module|a null pointer exception in the parser|the CI pipeline|the caching layer',
      'after reading the stack trace|using a debugger and detailed logs|before the next release|on a Friday afternoon|with help from a code review|by adding more logging|in a staging environment|without breaking the public API',
    ],
    finance: [
      'young professionals|retired couples|financial advisers|first-time investors|many households|freelancers|careful savers|personal finance bloggers',
      'regularly review|carefully track|make a plan for|compare options for|set monthly goals for|talk to the bank about|keep a spreadsheet for|think long term about',
      'their monthly budget|an emergency fund|credit card debt|retirement savings|low-cost index funds|household expenses|their mortgage payments|a high-interest savings account',
      'to avoid paying high interest|before the end of the tax year|with a simple spreadsheet|after every paycheck|when inflation is high|using a budgeting app|to save money for a house|so that they can retire early',
    ],
    health: [
      'personal trainers|runners|office workers|physiotherapists|beginners at the gym|older adults|nutritionists|yoga teachers',
      'recommend|try to include|never skip|focus on|slowly increase|schedule time for|stick to|keep track of',
      'thirty minutes of walking a day|strength training twice a week|eight hours of sleep|a diet rich in vegetables and protein|stretching after every workout|drinking enough water|interval training on the treadmill|rest days between hard workouts',
      'to improve heart health|to lose weight safely|to build muscle and stay healthy|to reduce stress and back pain|even during a busy week|according to recent fitness studies|to prepare for a marathon|to boost their energy levels',
    ],
    astronomy: [
      'amateur astronomers|NASA scientists|stargazers|observatory researchers|physics students|astrophotographers|planetary scientists|space telescope teams',
      'observed|photographed|measured the brightness of|studied|tracked|mapped|discovered new details about|published a paper on',
      'the rings of Saturn|a distant spiral galaxy|the craters of the Moon|Jupiter and its moons|a bright comet|the Andromeda galaxy|a supernova in a nearby galaxy|exoplanets orbiting red dwarf stars',
      'through a backyard telescope|on a clear night far from city lights|with the James Webb Space Telescope|during the total solar eclipse|using infrared cameras|over several months of observations|from a high mountain observatory|while the planet was at opposition',
    ],
    football: [
      'the home team|the young striker|the coach|the defenders|the goalkeeper|fans in the stadium|the midfielders|the captain',
      'prepared all week for|celebrated loudly after|spoke to reporters about|trained hard before|will never forget|analyzed the video of|looked nervous before|dedicated a song to',
      'the derby against their rivals|the Champions League final|the cup semi-final|the away match in Madrid|the title decider|the penalty shootout|the season opener|the World Cup qualifier',
      'after a late goal in stoppage time|despite heavy rain on the pitch|in front of sixty thousand fans|with a solid defensive performance|after a tense second half|thanks to a brilliant free kick|following a controversial VAR decision|with a new tactical formation',
    ],
    gardening: [
      'gardeners|my neighbors|beginner gardeners|allotment owners|landscape designers|farmers at the market|balcony gardeners|volunteers at the community garden',
      'plant|water|grow|protect|look after|feed compost to|check on|carefully transplant',
      'tomato seedlings|rose bushes|herbs like basil and mint|young fruit trees|potatoes and carrots|tulip bulbs|the vegetable beds|lettuce and spinach',
      'in early spring|after the last frost|in well-drained soil|in a sunny corner of the garden|with organic compost|every morning during dry weather|in raised beds|before the first autumn frost',
    ],
  },
  reviews: {
    restaurant: [
      'we had dinner at the new ramen bar downtown|ordered takeaway from the Thai place on Main Street|celebrated a birthday at this little Italian trattoria|stopped by the corner bakery for breakfast|had lunch at the vegetarian café near the office|tried the Sichuan restaurant everyone talks about',
      'the food was fresh and full of flavor|the staff were friendly and attentive|portions were generous for the price|the broth was rich and the noodles were perfectly chewy|dessert was the highlight of the evening|the food arrived hot and quickly',
      'we waited forty minutes for a table|the dishes were far too salty|the service was slow and a bit rude|the place was noisy and crowded|the prices have gone up a lot|my order was cold when it arrived',
    ],
    hotel: [
      'we stayed three nights at the harbour hotel|booked a family room at this resort for a week|spent one night at the airport hotel before an early flight|stayed at a small guesthouse in the old town|checked into the business hotel near the train station',
      'the room was spotless and quiet|the bed was very comfortable|breakfast had a great selection|the front desk staff were incredibly helpful|the view from the balcony was stunning|the location is perfect for sightseeing',
      'the wifi kept dropping|the air conditioning was loud all night|the bathroom was not very clean|check-in took almost an hour|the walls are thin and we heard everything|breakfast was overpriced',
    ],
    product: [
      'I bought these wireless headphones last month|ordered this stainless steel rice cooker|I have been using this robot vacuum for a few weeks|got this hiking backpack for a trip|bought the budget mechanical keyboard|picked up this electric kettle on sale',
      'the build quality feels solid|the battery lasts for days|it was easy to set up out of the box|it is quiet and works exactly as described|delivery was fast and the packaging was neat|it is worth every penny',
      'it stopped working after two weeks|the instructions were confusing|it feels cheap and flimsy|customer support never answered my emails|the battery drains far too quickly|it arrived with a scratch on the side',
    ],
    app: [
      'I have used this budgeting app every day since January|downloaded this language learning app|switched to this weather app|tried the new food delivery app|installed this meditation app on my phone',
      'the interface is clean and intuitive|notifications are useful without being annoying|it syncs quickly across my devices|the latest update made it much faster|it has every feature I need',
      'it crashes every time I open the camera|there are way too many ads|the subscription is too expensive|login fails after every update|it drains my phone battery',
    ],
  },
  stars: [
    'One star.|1/5, avoid.|One star, never again.', 'Two stars.|2/5, disappointing.|Two stars, not great.',
    'Three stars.|3/5, it was okay.|Three stars, average overall.', 'Four stars.|4/5, would recommend.|Four stars, pretty good.',
    'Five stars!|5/5, highly recommended.|Five stars, absolutely love it.',
  ],
  however: 'On the downside, ',
};

const ZH: Language = {
  code: 'zh', share: 0.27, cjk: true,
  leadIns: '||||其实|一般来说，|说实话，|最近',
  topics: {
    cooking: [
      '很多家庭主妇|餐厅的厨师|我奶奶|年轻人|美食博主|上班族|妈妈|大学生', '每天晚上|周末的时候|用电饭锅|用小火慢慢地|在厨房里|按照菜谱|下班以后|过年的时候',
      '喜欢做|学着做|亲手做|认真地做|常常做|给全家人做', '一锅香喷喷的米饭|番茄炒蛋|红烧肉|饺子|鸡汤|蛋炒饭|青菜豆腐汤|麻婆豆腐',
      '，味道特别好|，放一点盐和酱油就很香|，全家人都很喜欢|，火候很重要|，米饭松软不粘锅|，做法其实很简单',
    ],
    travel: [
      '背包客|很多游客|我们一家人|导游|年轻人|退休的老人|自由行的旅客|我和朋友', '下雨天|夏天|国庆假期|春天天气好的时候|去年冬天|趁着周末|查好天气预报以后|坐高铁',
      '去|出发去|打算去|计划去', '云南大理旅行|杭州西湖玩|北京看故宫|成都吃火锅|海南三亚度假|西藏拉萨旅游|桂林看山水|上海外滩拍照',
      '，记得带上雨伞|，天气很舒服|，住在便宜的民宿里|，景点人特别多|，风景非常漂亮|，一定要提前订酒店|，山里天气变化很快|，可以买一张旅游地图',
    ],
    software: [
      '后端工程师|我们团队|新来的程序员|测试同事|运维工程师|开源项目的维护者|架构师|前端开发', '上线之前|昨天晚上|在测试环境里|通过日志|用调试器|加班的时候|代码评审时|重构之后',
      '发现了|修复了|定位了|排查了|分析了|复现了', '一个内存泄漏问题|数据库查询太慢的问题|接口超时的问题|缓存失效的bug|空指针异常|并发导致的数据错误|单元测试失败的原因|部署脚本里的错误',
      '，系统终于稳定了|，写了一份故障报告|，又补了几个测试用例|，用户再也没有投诉|，花了整整一天|，顺便优化了性能|，代码变得更清晰|，上线后一切正常',
    ],
    finance: [
      '年轻人|很多家庭|理财顾问|退休老人|上班族|自由职业者|刚工作的大学生|我爸妈', '每个月|发工资以后|在年底|通过手机银行|为了买房|为了以后养老|从今年开始|趁着利率较高',
      '认真规划|仔细记录|重新检查|开始关注|定期整理|合理安排', '一部分工资|家庭开支|信用卡欠款|指数基金|养老金|房贷|应急储蓄|每月预算',
      '，避免乱花钱|，慢慢积累了存款|，压力小了很多|，收益还算稳定|，终于有了一笔储蓄|，用记账软件很方便|，利息也不少|，生活更有保障',
    ],
    health: [
      '健身教练|跑步爱好者|上班族|医生|老年人|营养师|瑜伽老师|刚开始健身的人', '每天|每周三次|早上起床后|下班以后|周末|饭后|长期|在健身房里',
      '坚持|尝试|开始|喜欢|计划', '慢跑三十分钟|力量训练|拉伸运动|早睡早起|多吃蔬菜水果|喝足够的水|游泳|散步一小时',
      '，身体越来越健康|，体重下降了不少|，睡眠质量提高了|，心情也变好了|，可以减轻腰疼|，肌肉更有力量|，精力更充沛|，免疫力也增强了',
    ],
    astronomy: [
      '天文爱好者|科学家|天文台的研究人员|物理系的学生|摄影师|孩子们|NASA的团队|我们天文社', '在晴朗的夜晚|用天文望远镜|在远离城市灯光的山上|通过韦布太空望远镜|日全食期间|连续几个月|在郊外|凌晨三点',
      '观测到了|拍摄了|研究了|发现了|记录了|测量了', '土星的光环|木星和它的卫星|月球上的环形山|一颗明亮的彗星|仙女座星系|遥远的螺旋星系|超新星爆发|银河',
      '，画面非常震撼|，数据已经发表|，吸引了很多人|，星空特别美|，这是一次难得的机会|，帮助我们了解宇宙|，肉眼也能看到|，大家都很兴奋',
    ],
    football: [
      '主队|年轻的前锋|主教练|球迷们|守门员|中场球员|队长|这支球队', '在昨晚的比赛中|在德比战里|在联赛最后一轮|在欧冠决赛上|在主场|下半场|在大雨中|在点球大战中',
      '打进了绝杀进球|扑出了关键点球|完成了精彩的逆转|送出了两次助攻|拿下了三分|保持了零封|赢得了冠军',
      '，全场球迷都沸腾了|，教练非常满意|，比分最终是二比一|，媒体给了很高的评价|，球队排名上升到第二|，大家激动地庆祝|，这场比赛令人难忘|，进攻非常有威胁',
    ],
    gardening: [
      '园丁|邻居家的阿姨|我爷爷|刚开始种菜的人|社区花园的志愿者|农民|阳台种花的人|花店老板', '春天|在最后一次霜冻后|每天早上|在阳光充足的地方|用有机肥料|在花盆里|秋天|下雨以后',
      '种了|照顾|细心照料|种植', '番茄苗|玫瑰花|罗勒和薄荷|果树|土豆和胡萝卜|郁金香球茎|一片菜地|生菜和菠菜',
      '，长得特别好|，很快就发芽了|，收获了很多蔬菜|，开出了漂亮的花|，需要经常浇水|，土壤要疏松透气|，要注意防虫|，周末可以采摘',
    ],
  },
  reviews: {
    restaurant: [
      '昨天和朋友去了新开的火锅店|在楼下的面馆吃了午饭|点了这家川菜馆的外卖|周末带家人去了这家粤菜餐厅|在商场里的日料店吃了晚饭',
      '菜品很新鲜，味道也很好|服务员非常热情|分量足，价格也合理|汤底浓郁，面条很有嚼劲|上菜速度很快',
      '排队等了四十分钟|菜太咸了|服务态度很差|环境又吵又挤|外卖送到的时候已经凉了',
    ],
    hotel: [
      '在海边的酒店住了三晚|国庆期间订了这家民宿|出差住在火车站附近的商务酒店|带孩子在度假村住了一周|在古城里的客栈住了两晚',
      '房间干净又安静|床很舒服|早餐种类很丰富|前台工作人员很热心|阳台的风景特别美|位置很方便，出门就是景点',
      '无线网络经常断|空调噪音很大|卫生间不太干净|办理入住等了快一个小时|隔音太差了|早餐太贵',
    ],
    product: [
      '上个月买了这款无线耳机|网上买了这个电饭煲|用这台扫地机器人几个星期了|给爸妈买了这个电热水壶|双十一买的机械键盘',
      '做工很扎实|电池很耐用|拆开就能用，设置很简单|声音很小，跟描述的一样|物流很快，包装也很好|性价比很高',
      '用了两个星期就坏了|说明书看不懂|质量很差，摸起来很廉价|客服一直不回复|电池掉电太快|收到的时候外壳有划痕',
    ],
    app: [
      '每天都在用这个记账软件|下载了这个学英语的应用|最近换了这个天气预报软件|试用了新的外卖平台|手机上装了这个冥想应用',
      '界面简洁好用|提醒功能很实用|多个设备同步很快|更新以后速度快多了|功能很齐全',
      '打开相机就闪退|广告太多了|会员太贵了|每次更新都要重新登录|特别耗电',
    ],
  },
  stars: ['一星，不推荐。|一星，非常失望。|打一分。', '两星，有点失望。|两星，一般偏下。|打两分。', '三星，还行吧。|三星，中规中矩。|打三分。', '四星，值得推荐。|四星，总体不错。|打四分。', '五星好评！|五星，强烈推荐！|满分五分！'],
  however: '不过，',
};

const ES: Language = {
  code: 'es', share: 0.05, cjk: false, leadIns: '|||En mi experiencia, |Hoy en día, ',
  topics: {
    cooking: ['muchas familias|los chefs profesionales|mis abuelos|los estudiantes', 'preparan arroz blanco con ajo|cocinan una paella de mariscos|hacen una tortilla de patatas|sirven lentejas con chorizo', 'a fuego lento|los domingos por la tarde|con aceite de oliva y sal|siguiendo una receta tradicional'],
    travel: ['los viajeros|muchos turistas|las familias|los mochileros', 'visitan la Alhambra de Granada|recorren la costa de Andalucía|viajan en tren hasta Barcelona|exploran los pueblos de los Pirineos', 'en primavera cuando hace buen tiempo|con poco presupuesto|durante las vacaciones de verano|después de consultar el pronóstico del tiempo'],
    software: ['los programadores|los ingenieros de backend|los equipos de desarrollo|los desarrolladores junior', 'corrigen un error en la base de datos|depuran una fuga de memoria en el servidor|escriben pruebas unitarias para la API|revisan el código del módulo de pagos', 'antes del próximo lanzamiento|con la ayuda de los registros|usando el depurador|durante la revisión de código'],
    finance: ['los hogares|los jóvenes profesionales|los jubilados|los ahorradores', 'revisan su presupuesto mensual|ahorran una parte del sueldo|pagan las deudas de la tarjeta de crédito|invierten en fondos indexados', 'para evitar intereses altos|cada mes sin falta|con una hoja de cálculo|para comprar una casa'],
    health: ['los corredores|los entrenadores personales|muchas personas mayores|los principiantes', 'caminan treinta minutos al día|hacen ejercicios de fuerza dos veces por semana|duermen ocho horas cada noche|comen más verduras y proteínas', 'para mejorar la salud del corazón|para perder peso de forma segura|para reducir el estrés|incluso en semanas muy ocupadas'],
    astronomy: ['los astrónomos aficionados|los científicos|los estudiantes de física|los fotógrafos nocturnos', 'observan los anillos de Saturno|fotografían la galaxia de Andrómeda|estudian los cráteres de la Luna|siguen el paso de un cometa brillante', 'con un telescopio pequeño|en una noche despejada|desde el observatorio de Canarias|lejos de las luces de la ciudad'],
    football: ['los aficionados|los jugadores del Betis|los delanteros|los defensas', 'celebran el gol de la victoria|preparan el derbi contra su rival|analizan la tanda de penaltis|sueñan con ganar la liga', 'en el último minuto|delante de cincuenta mil espectadores|bajo una lluvia intensa|después de un partido muy duro'],
    gardening: ['los jardineros|mis vecinos|los agricultores|los horticultores', 'plantan tomates y pimientos|riegan las rosas del jardín|cultivan hierbas aromáticas en macetas|podan los árboles frutales', 'a principios de primavera|con abono orgánico|cada mañana en verano|en un rincón soleado'],
  },
  reviews: {
    restaurant: ['cenamos en el nuevo bar de tapas del centro|pedimos comida a domicilio de la pizzería del barrio|comimos en una marisquería junto al puerto', 'la comida estaba deliciosa y muy fresca|el personal fue muy amable|las raciones eran generosas', 'esperamos casi una hora por la mesa|la comida estaba demasiado salada|el servicio fue lento'],
    hotel: ['nos alojamos tres noches en un hotel frente al mar|reservamos una habitación familiar en Sevilla|pasamos una noche en el hotel del aeropuerto', 'la habitación estaba limpia y tranquila|el desayuno era excelente|la ubicación es perfecta', 'el wifi no funcionaba bien|el aire acondicionado hacía mucho ruido|el baño no estaba limpio'],
    product: ['compré estos auriculares inalámbricos el mes pasado|pedí esta arrocera de acero inoxidable|llevo unas semanas usando este robot aspirador', 'la calidad es muy buena|la batería dura varios días|fue muy fácil de configurar', 'dejó de funcionar a las dos semanas|las instrucciones son confusas|el servicio al cliente nunca respondió'],
    app: ['uso esta aplicación de finanzas todos los días|descargué esta app para aprender idiomas|probé la nueva app de comida a domicilio', 'la interfaz es clara e intuitiva|se sincroniza rápido entre dispositivos|tiene todas las funciones que necesito', 'se cierra sola cada dos por tres|tiene demasiados anuncios|la suscripción es muy cara'],
  },
  stars: ['Una estrella.|1/5, no lo recomiendo.', 'Dos estrellas.|2/5, decepcionante.', 'Tres estrellas.|3/5, normalito.', 'Cuatro estrellas.|4/5, lo recomiendo.', '¡Cinco estrellas!|5/5, excelente.'],
  however: 'Lo malo: ',
};

const FR: Language = {
  code: 'fr', share: 0.05, cjk: false, leadIns: '|||En général, |Aujourd’hui, ',
  topics: {
    cooking: ['les cuisiniers amateurs|les chefs|mes grands-parents|les étudiants', 'préparent un risotto aux champignons|font cuire du riz basmati|mijotent un bœuf bourguignon|servent une quiche lorraine', 'à feu doux|le dimanche midi|avec du beurre et des herbes fraîches|selon une recette de famille'],
    travel: ['les voyageurs|les touristes|les familles|les randonneurs', 'visitent les châteaux de la Loire|explorent la côte bretonne|prennent le train pour Marseille|découvrent les villages de Provence', 'au printemps quand il fait beau|avec un petit budget|pendant les vacances d’été|après avoir vérifié la météo'],
    software: ['les développeurs|les ingénieurs logiciel|les équipes de test|les administrateurs système', 'corrigent un bug dans le module de paiement|déboguent une fuite de mémoire|écrivent des tests unitaires|analysent les journaux du serveur', 'avant la mise en production|avec un débogueur|pendant la revue de code|grâce à la trace d’appels'],
    finance: ['les jeunes actifs|les retraités|les ménages|les épargnants', 'établissent un budget mensuel|remboursent leurs crédits|placent leur épargne sur un livret|investissent dans des fonds indiciels', 'pour préparer leur retraite|chaque mois après la paie|avec un tableur simple|pour acheter un appartement'],
    health: ['les coureurs|les coachs sportifs|les personnes âgées|les débutants', 'marchent trente minutes par jour|font de la musculation deux fois par semaine|dorment huit heures par nuit|mangent plus de légumes', 'pour rester en bonne santé|pour perdre du poids|pour réduire le stress|même pendant une semaine chargée'],
    astronomy: ['les astronomes amateurs|les chercheurs|les étudiants en physique|les astrophotographes', 'observent les anneaux de Saturne|photographient la galaxie d’Andromède|étudient les cratères de la Lune|suivent une comète brillante', 'avec un petit télescope|par une nuit claire|depuis l’observatoire du Pic du Midi|loin des lumières de la ville'],
    football: ['les supporters|les joueurs du PSG|les attaquants|les défenseurs', 'célèbrent le but de la victoire|préparent le match contre Marseille|analysent la séance de tirs au but|rêvent de gagner le championnat', 'à la dernière minute|devant quarante mille spectateurs|sous une pluie battante|après un match très disputé'],
    gardening: ['les jardiniers|mes voisins|les maraîchers|les amateurs de plantes', 'plantent des tomates et des courgettes|arrosent les rosiers|cultivent des herbes aromatiques en pot|taillent les arbres fruitiers', 'au début du printemps|avec du compost bio|chaque matin en été|dans un coin ensoleillé du jardin'],
  },
  reviews: {
    restaurant: ['nous avons dîné dans la nouvelle crêperie du quartier|nous avons commandé au restaurant libanais d’à côté|nous avons déjeuné dans un bistrot près de la gare', 'les plats étaient délicieux et bien présentés|le personnel était très accueillant|les portions étaient généreuses', 'nous avons attendu quarante minutes|les plats étaient trop salés|le service était lent'],
    hotel: ['nous avons passé trois nuits dans un hôtel au bord de la mer|nous avons réservé une chambre familiale à Lyon|j’ai dormi une nuit à l’hôtel de l’aéroport', 'la chambre était propre et calme|le petit-déjeuner était excellent|l’emplacement est idéal', 'le wifi ne marchait pas|la climatisation était bruyante|la salle de bain n’était pas propre'],
    product: ['j’ai acheté ce casque sans fil le mois dernier|j’ai commandé ce cuiseur à riz|j’utilise cet aspirateur robot depuis quelques semaines', 'la qualité de fabrication est solide|la batterie tient plusieurs jours|l’installation a été très simple', 'il est tombé en panne après deux semaines|la notice est incompréhensible|le service client ne répond jamais'],
    app: ['j’utilise cette application de budget tous les jours|j’ai téléchargé cette appli pour apprendre les langues|j’ai essayé la nouvelle appli de livraison de repas', 'l’interface est claire et intuitive|la synchronisation est rapide|elle a toutes les fonctions dont j’ai besoin', 'elle plante à chaque ouverture|il y a beaucoup trop de publicités|l’abonnement est trop cher'],
  },
  stars: ['Une étoile.|1/5, à éviter.', 'Deux étoiles.|2/5, décevant.', 'Trois étoiles.|3/5, correct sans plus.', 'Quatre étoiles.|4/5, je recommande.', 'Cinq étoiles !|5/5, parfait.'],
  however: 'En revanche, ',
};

const DE: Language = {
  // No lead-ins: German puts the verb second, so an opening phrase would need a different word order.
  code: 'de', share: 0.04, cjk: false, leadIns: '',
  topics: {
    cooking: ['viele Hobbyköche|Profiköche|meine Großeltern|die Studenten', 'kochen Basmatireis|backen frisches Brot|braten Kartoffeln mit Zwiebeln|kochen eine Gemüsesuppe', 'bei niedriger Hitze|am Sonntagmittag|mit Butter und frischen Kräutern|nach einem alten Familienrezept'],
    travel: ['viele Reisende|die Touristen|junge Familien|die Wanderer', 'besuchen die Schlösser in Bayern|erkunden die Ostseeküste|fahren mit dem Zug nach Wien|entdecken die Dörfer im Schwarzwald', 'im Frühling bei schönem Wetter|mit kleinem Budget|in den Sommerferien|nach einem Blick auf den Wetterbericht'],
    software: ['die Entwickler|die Backend-Ingenieure|die Testteams|die Administratoren', 'beheben einen Fehler im Zahlungsmodul|suchen ein Speicherleck im Server|schreiben Unit-Tests für die API|analysieren die Logdateien', 'vor dem nächsten Release|mit einem Debugger|während des Code-Reviews|anhand des Stacktraces'],
    finance: ['junge Berufstätige|viele Rentner|die Haushalte|sparsame Familien', 'planen ihr monatliches Budget|tilgen ihre Kreditkartenschulden|sparen einen Teil ihres Gehalts|investieren in günstige Indexfonds', 'für die Altersvorsorge|jeden Monat nach dem Gehalt|mit einer einfachen Tabelle|für den Kauf einer Wohnung'],
    health: ['die Läufer|Fitnesstrainer|ältere Menschen|viele Anfänger', 'machen zweimal pro Woche Krafttraining|schlafen acht Stunden pro Nacht|essen mehr Gemüse und Eiweiß|laufen dreißig Minuten am Tag', 'für ein gesundes Herz|zum sicheren Abnehmen|gegen Stress und Rückenschmerzen|auch in einer stressigen Woche'],
    astronomy: ['Hobbyastronomen|die Forscher|Physikstudenten|Astrofotografen', 'beobachten die Ringe des Saturn|fotografieren die Andromedagalaxie|untersuchen die Krater des Mondes|verfolgen einen hellen Kometen', 'mit einem kleinen Teleskop|in einer klaren Nacht|von einer Sternwarte in den Alpen|weit weg von den Lichtern der Stadt'],
    football: ['die Fans|die Spieler des FC Bayern|die Stürmer|die Verteidiger', 'feiern das Siegtor|analysieren das Elfmeterschießen|träumen von der Meisterschaft|kämpfen um den Pokal', 'in der Nachspielzeit|vor sechzigtausend Zuschauern|bei strömendem Regen|nach einem harten Spiel'],
    gardening: ['die Gärtner|meine Nachbarn|viele Hobbygärtner|die Landwirte', 'pflanzen Tomaten und Zucchini|gießen die Rosen|ziehen Kräuter im Topf|schneiden die Obstbäume', 'im frühen Frühling|mit Biokompost|jeden Morgen im Sommer|in einer sonnigen Ecke des Gartens'],
  },
  reviews: {
    restaurant: ['wir waren im neuen Ramen-Restaurant in der Altstadt|wir haben Pizza beim Italiener um die Ecke bestellt|wir haben im Biergarten am See gegessen', 'das Essen war frisch und lecker|die Bedienung war sehr freundlich|die Portionen waren groß', 'wir haben fast eine Stunde gewartet|das Essen war viel zu salzig|der Service war langsam'],
    hotel: ['wir haben drei Nächte im Hotel am Hafen übernachtet|wir haben ein Familienzimmer in München gebucht|ich habe eine Nacht im Flughafenhotel verbracht', 'das Zimmer war sauber und ruhig|das Frühstück war ausgezeichnet|die Lage ist perfekt', 'das WLAN war ständig weg|die Klimaanlage war sehr laut|das Bad war nicht sauber'],
    product: ['ich habe diese kabellosen Kopfhörer letzten Monat gekauft|ich habe diesen Reiskocher bestellt|ich benutze diesen Saugroboter seit ein paar Wochen', 'die Verarbeitung ist solide|der Akku hält mehrere Tage|die Einrichtung war ganz einfach', 'nach zwei Wochen war er kaputt|die Anleitung ist verwirrend|der Kundenservice antwortet nicht'],
    app: ['ich nutze diese Budget-App jeden Tag|ich habe diese Sprachlern-App heruntergeladen|ich habe die neue Lieferdienst-App ausprobiert', 'die Oberfläche ist übersichtlich|die Synchronisierung geht schnell|sie hat alle Funktionen, die ich brauche', 'sie stürzt ständig ab|es gibt viel zu viel Werbung|das Abo ist zu teuer'],
  },
  stars: ['Ein Stern.|1/5, nicht zu empfehlen.', 'Zwei Sterne.|2/5, enttäuschend.', 'Drei Sterne.|3/5, ganz okay.', 'Vier Sterne.|4/5, empfehlenswert.', 'Fünf Sterne!|5/5, absolut top.'],
  however: 'Aber ',
};

const JA: Language = {
  code: 'ja', share: 0.04, cjk: true, leadIns: '|||実は|最近は、',
  topics: {
    cooking: ['母は|料理好きの人は|プロの料理人は|学生たちは', '週末に|土鍋で|弱火でじっくり|毎晩', 'ご飯を炊きます|味噌汁を作ります|カレーを煮込みます|天ぷらを揚げます'],
    travel: ['旅行者は|観光客は|家族連れは|バックパッカーは', '天気のいい春の日に|夏休みに|新幹線で|雨の日でも', '京都のお寺を訪れます|北海道を旅します|沖縄の海に行きます|温泉旅館に泊まります'],
    software: ['エンジニアは|開発チームは|新人プログラマーは|テスト担当者は', 'リリース前に|ログを見ながら|デバッガーを使って|コードレビューで', 'メモリリークを調査します|バグを修正します|単体テストを書きます|遅いクエリを改善します'],
    finance: ['若い会社員は|多くの家庭は|退職した夫婦は|フリーランスの人は', '毎月|給料日の後に|家計簿アプリで|老後のために', '家計の予算を見直します|貯金を続けます|インデックスファンドに投資します|クレジットカードの支払いを管理します'],
    health: ['ランナーは|トレーナーは|高齢者は|会社員は', '毎朝|週に二回|仕事の後に|健康のために', '三十分ウォーキングします|筋力トレーニングをします|ストレッチをします|野菜を多く食べます'],
    astronomy: ['天文ファンは|研究者は|物理学の学生は|星空写真家は', '晴れた夜に|望遠鏡で|山の上の天文台から|街の明かりから離れて', '土星の環を観測します|アンドロメダ銀河を撮影します|月のクレーターを調べます|明るい彗星を追いかけます'],
    football: ['サポーターは|若いフォワードは|監督は|ゴールキーパーは', '雨の中の試合で|ダービーマッチで|ホームスタジアムで|後半のロスタイムに', '決勝ゴールを喜びます|PK戦に備えます|リーグ優勝を目指します|チームの勝利を祝います'],
    gardening: ['園芸家は|近所の人は|農家の人は|ベランダで育てる人は', '春先に|毎朝|有機肥料を使って|日当たりのいい場所で', 'トマトの苗を植えます|バラに水をやります|ハーブを鉢で育てます|果樹を剪定します'],
  },
  reviews: {
    restaurant: ['駅前の新しいラーメン屋に行きました|近所の寿司屋でランチを食べました|居酒屋で友人と夕食をとりました', '料理が新鮮でとてもおいしかったです|店員さんがとても親切でした|量が多くてお得でした', '一時間近く待たされました|味が濃すぎました|サービスが遅かったです'],
    hotel: ['海の見えるホテルに三泊しました|京都の旅館に家族で泊まりました|空港近くのホテルに一泊しました', '部屋が清潔で静かでした|朝食がとても充実していました|立地が最高でした', 'Wi-Fiがよく切れました|エアコンの音がうるさかったです|お風呂があまりきれいではありませんでした'],
    product: ['先月このワイヤレスイヤホンを買いました|この炊飯器を注文しました|このロボット掃除機を数週間使っています', '作りがしっかりしています|バッテリーが長持ちします|設定がとても簡単でした', '二週間で壊れました|説明書がわかりにくいです|サポートから返事がありません'],
    app: ['この家計簿アプリを毎日使っています|語学学習アプリをダウンロードしました|新しいフードデリバリーアプリを試しました', '画面が見やすくて使いやすいです|同期がとても速いです|必要な機能がそろっています', '起動するたびに落ちます|広告が多すぎます|サブスクが高すぎます'],
  },
  stars: ['星一つ。|1/5、おすすめしません。', '星二つ。|2/5、残念でした。', '星三つ。|3/5、まあまあです。', '星四つ。|4/5、おすすめです。', '星五つ！|5/5、最高です！'],
  however: 'ただ、',
};

const LANGUAGES: readonly Language[] = [EN, ZH, ES, FR, DE, JA];

/** Queries for the demo; their nearest neighbours are cooking rice, travel weather (Chinese), debugging. */
export const DEMO_QUERIES: readonly string[] = [
  'How do I cook fluffy rice in a pot so it does not turn out sticky?',
  '下雨天去云南旅行，天气怎么样，需要带雨伞吗？',
  'How to debug a memory leak in a Node.js service using the stack trace and logs',
];

const ARTICLE_LINES = 2_000;
const REVIEW_LINES = 1_500;
const SEED = 0x5eed_2024;
const MIN_LINE = 40;
const MAX_LINE = 400;
const PARAGRAPH = { min: 1_400, max: 1_600 };
/** Blank and whitespace-only lines: the reader skips them but keeps their row numbers. */
const BLANKS = ['', ' ', '\t', '   ', '\u3000', ' \t '];

type Random = () => number;


function pick<T>(random: Random, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)]!;
}

function alternatives(slot: string): string[] {
  return slot.split('|');
}

function pickLanguage(random: Random): Language {
  let roll = random();
  for (const language of LANGUAGES) {
    roll -= language.share;
    if (roll < 0) return language;
  }
  return EN;
}

/** Capitalizes and ends with the language's full stop, unless the text already ends a sentence. */
function finish(language: Language, text: string): string {
  const capitalized = text.charAt(0).toUpperCase() + text.slice(1);
  return /[.!?。！？]$/.test(capitalized) ? capitalized : capitalized + (language.cjk ? '。' : '.');
}

function joinSentences(language: Language, sentences: readonly string[]): string {
  return sentences.join(language.cjk ? '' : ' ');
}

function topicSentence(random: Random, language: Language, topic: Topic): string {
  const parts = language.topics[topic].map((slot) => pick(random, alternatives(slot)));
  return finish(language, pick(random, alternatives(language.leadIns)) + parts.join(language.cjk ? '' : ' '));
}

/** Distinct sentences on one topic until the text reaches `min` characters (and `want` sentences), never past `max`. */
function topicText(random: Random, language: Language, topic: Topic, want: number, min: number, max: number): string {
  const sentences: string[] = [];
  for (let attempt = 0; attempt < 200; attempt += 1) {
    const length = joinSentences(language, sentences).length;
    if (sentences.length >= want && length >= min) break;
    const sentence = topicSentence(random, language, topic);
    if (sentences.includes(sentence)) continue;
    if (length + sentence.length + 1 > max) break;
    sentences.push(sentence);
  }
  return joinSentences(language, sentences);
}

function articleLine(random: Random): string {
  const language = pickLanguage(random);
  const want = (language.cjk ? 2 : 1) + Math.floor(random() * 3);
  return topicText(random, language, pick(random, TOPICS), want, MIN_LINE, MAX_LINE);
}

function paragraph(random: Random): string {
  const language = random() < 0.7 ? EN : ZH;
  return topicText(random, language, pick(random, TOPICS), 1, PARAGRAPH.min, PARAGRAPH.max);
}

/** Star ratings lean positive, as real reviews do. */
function pickStars(random: Random): number {
  return pick(random, [1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 5]);
}

function pickSome(random: Random, options: readonly string[], count: number): string[] {
  const chosen: string[] = [];
  while (chosen.length < Math.min(count, options.length)) {
    const option = pick(random, options);
    if (!chosen.includes(option)) chosen.push(option);
  }
  return chosen;
}

function reviewText(random: Random, language: Language): string {
  const [targets, good, bad] = language.reviews[pick(random, CATEGORIES)];
  const stars = pickStars(random);
  const remarks =
    stars === 3
      ? [pick(random, alternatives(good)), language.however + pick(random, alternatives(bad))]
      : pickSome(random, alternatives(stars > 3 ? good : bad), 1 + Math.floor(random() * 2));
  const rating = pick(random, alternatives(language.stars[stars - 1]!));
  return joinSentences(language, [pick(random, alternatives(targets)), ...remarks, rating].map((part) => finish(language, part)));
}

/** Calls `make` until it returns a line not seen before (the banks are large enough that few retries happen). */
function distinct(seen: Set<string>, make: () => string): string {
  for (let attempt = 0; attempt < 100; attempt += 1) {
    const line = make();
    if (!seen.has(line)) {
      seen.add(line);
      return line;
    }
  }
  throw new Error('sample corpus: phrase banks too small for another distinct line');
}

function articleLines(random: Random): { lines: string[]; blank: number } {
  const seen = new Set<string>();
  const lines: string[] = [];
  let blank = 0;
  for (let index = 0; index < ARTICLE_LINES; index += 1) {
    const roll = random();
    if (roll < 0.01) {
      lines.push(pick(random, BLANKS));
      blank += 1;
    } else if (roll < 0.015) {
      lines.push(distinct(seen, () => paragraph(random)));
    } else {
      lines.push(distinct(seen, () => articleLine(random)));
    }
  }
  return { lines, blank };
}

function reviewLines(random: Random): string[] {
  const seen = new Set<string>();
  const lines: string[] = [];
  for (let index = 0; index < REVIEW_LINES; index += 1) {
    const language = pickLanguage(random);
    const text = distinct(seen, () => reviewText(random, language));
    lines.push(JSON.stringify({ id: `r-${String(index + 1).padStart(5, '0')}`, lang: language.code, text }));
  }
  return lines;
}

/**
 * Gzip with a reproducible header: zlib already writes mtime 0, and the OS byte is pinned to Unix
 * (zlib would write another value on Windows), so the bytes are the same on every platform.
 */
function gzipDeterministic(data: Buffer): Buffer {
  const gzipped = gzipSync(data, { level: 9 });
  gzipped.writeUInt32LE(0, 4);
  gzipped[9] = 3;
  return gzipped;
}

/**
 * Writes `articles.txt` (plain text, one item per line, ~1% blank) and `reviews.jsonl.gz` (gzip JSON
 * Lines `{"id","lang","text"}`) into `folder`, creating it if missing. Same bytes on every run.
 * Returns the written paths, the number of lines in both files, and how many are blank.
 */
export async function writeSampleCorpus(folder: string): Promise<{ files: string[]; lines: number; blank: number }> {
  const random = mulberry32(SEED);
  const articles = articleLines(random);
  const reviews = reviewLines(random);
  await mkdir(folder, { recursive: true });
  const files = [join(folder, 'articles.txt'), join(folder, 'reviews.jsonl.gz')] as const;
  await writeFile(files[0], articles.lines.join('\n') + '\n');
  await writeFile(files[1], gzipDeterministic(Buffer.from(reviews.join('\n') + '\n')));
  return { files: [...files], lines: articles.lines.length + reviews.length, blank: articles.blank };
}
